"""How the sampling loop (:func:`vfusion.diffusion.sampling.sample_loop`) runs, as one value.

The run's defaults for these live in the schema (:class:`vfusion.config.SampleConfig`); callers resolve
them there (:meth:`vfusion.VideoFusionPipeline.sample_defaults`) and hand the loop the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LoopSettings:
    """``sampler`` (a name of :mod:`vfusion.diffusion.samplers`) run for ``steps`` steps, classifier-free
    guidance at ``guidance_scale`` (1: off), on ``device`` in ``dtype``, with a progress bar or not."""

    sampler: str
    steps: int
    guidance_scale: float = 1.0
    device: torch.device | str = "cpu"
    dtype: torch.dtype = torch.float32
    progress: bool = True
