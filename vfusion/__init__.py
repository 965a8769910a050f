"""vfusion: a study codebase for decomposed-noise video diffusion (VideoFusion, CVPR 2023)."""

__all__ = ["DecomposedNoise", "lambda_schedule"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Resolved on first use so that `import vfusion` (and `vfusion --help`) does not import torch.
    if name in __all__:
        from vfusion.diffusion import noise

        return getattr(noise, name)
    raise AttributeError(f"module 'vfusion' has no attribute {name!r}")
