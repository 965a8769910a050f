"""vfusion: a study codebase for decomposed-noise video diffusion (VideoFusion, CVPR 2023)."""

from vfusion.diffusion.noise import DecomposedNoise, lambda_schedule

__all__ = ["DecomposedNoise", "lambda_schedule"]
__version__ = "0.1.0"
