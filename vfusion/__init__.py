"""vfusion: a study codebase for decomposed-noise video diffusion (VideoFusion, CVPR 2023)."""

__all__ = ["DecomposedNoise", "lambda_schedule", "VideoFusionPipeline", "VideoFusionPipelineOutput", "Cond",
           "DiffusionProcess"]
__version__ = "0.1.0"

_WHERE = {"DecomposedNoise": "vfusion.diffusion.noise", "lambda_schedule": "vfusion.diffusion.noise",
          "VideoFusionPipeline": "vfusion.inference.pipeline", "VideoFusionPipelineOutput": "vfusion.inference.pipeline",
          "Cond": "vfusion.conditioning", "DiffusionProcess": "vfusion.diffusion.process"}


def __getattr__(name: str):
    # Resolved on first use so that `import vfusion` (and `vfusion --help`) does not import torch.
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'vfusion' has no attribute {name!r}")
