"""What a sampling task may change in the loop (:func:`vfusion.diffusion.sampling.sample_loop`).

A task (given frames, an edit, FreeInit) changes plain sampling at fixed points, each a no-op by default:

    check(shape, tasks)         before anything is drawn
    steps_to_run(steps)         how many of the sampler's last steps run (an edit runs fewer)
    extra_passes                whole sampling passes after the first (FreeInit)
    jumps                       RePaint resamplings per step
    begin(x, state)             the first pass's start, from the initial noise (``x``)
    restart(x, state)           a later pass's start, from the previous pass's result (``x``)
    prediction(pred, z, t, p)   every step's prediction
    finish(x)                   each pass's result
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch


@dataclass(frozen=True)
class PassState:
    """What a task sees of a sampling pass when it starts one."""

    model: Callable                    # the denoiser, (z, t, cond) -> prediction
    process: Any                       # the run's DiffusionProcess / FlowProcess
    shape: tuple[int, ...]             # (B, C, T, H, W)
    settings: Any                      # the loop's LoopSettings
    cond: Optional[Any]                # the batch's Cond, or None
    start: torch.Tensor                # the initial noise, drawn once for every pass
    timesteps: torch.Tensor            # this pass's scheduler timesteps
    steps_run: int                     # len(timesteps): settings.steps, or fewer for an edit
    init_sigma: float                  # the scheduler's init_noise_sigma
    draw_noise: Callable[[Any], torch.Tensor]  # a prior draw at a scheduler timestep's noise level

    @property
    def partial(self) -> bool:
        """True when only the last ``steps_run`` of the sampler's steps run (an edit)."""
        return self.steps_run < self.settings.steps

    def model_timesteps(self, t) -> torch.Tensor:
        """The scheduler timestep ``t`` as the (B,) tensor the networks take."""
        return self.process.model_timesteps(t, self.shape[0], self.settings.device)


class LoopTask:
    """A task of the sampling loop; each method is a no-op here (module docstring)."""

    extra_passes: int = 0
    jumps: int = 0

    def check(self, shape: Sequence[int], tasks: Sequence["LoopTask"]) -> None:
        pass

    def steps_to_run(self, steps: int) -> int:
        return steps

    def begin(self, x: torch.Tensor, state: PassState) -> torch.Tensor:
        return x

    def restart(self, x: torch.Tensor, state: PassState) -> torch.Tensor:
        return x

    def prediction(self, pred: torch.Tensor, z: torch.Tensor, t: torch.Tensor, process) -> torch.Tensor:
        return pred

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @property
    def batch_clip(self) -> Optional[torch.Tensor]:
        """The task's clip (B, C, T, H, W), whose batch is the sample's when nothing else sets it; None here."""
        return None

    def encoded(self, encode: Callable[[torch.Tensor, str], torch.Tensor]) -> "LoopTask":
        """This task with its clips (given in [-1, 1] pixels) moved to the sampler's space by ``encode(clip,
        name)`` (the pipeline's VAE and resizing)."""
        return self
