"""Editing a video: SDEdit's partial sampling and DDIM inversion, for either process kind.

SDEdit (Meng et al., ICLR 2022) at strength s ∈ [0, 1] with a sampler of N steps runs the last n = floor(N·s)
steps of the sampler's schedule (as diffusers' img2img pipelines count them), from the input noised to the first of
them with noise from the run's prior, z = add_noise(x, ε, t_start), or carried there by DDIM inversion. s = 0
returns the input; s = 1 starts from the prior's noise itself (add_noise(x, ε, T) would keep a trace sqrt(ᾱ_T)·x of
the input), so it is exactly unconditional sampling from the same seed.

DDIM inversion walks the deterministic sampler backwards from the clean input to t_start. VP process: diffusers'
``DDIMInverseScheduler`` on the run's scheduler config (its first n timesteps reverse the sampler's last n), the
network called at the level being moved to, as in diffusers. Rectified flow: the flow ODE's Euler step backwards on
the sampler's σ grid, z(σ') = z(σ) + (σ' − σ)·v̂(z(σ), σ), the network called at the level being left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

import torch

from vfusion.diffusion.task import LoopTask, PassState
from vfusion.errors import UserError

Predict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (z, model timesteps (B,)) -> prediction


class EditError(UserError, ValueError):
    """Edit settings that cannot be used."""


def check_strength(strength: float) -> float:
    try:
        s = float(strength)
    except (TypeError, ValueError):
        raise EditError(f"strength must be a number in [0, 1], got {strength!r}") from None
    if not math.isfinite(s) or not 0.0 <= s <= 1.0:
        raise EditError(f"strength must be in [0, 1] (0 returns the input, 1 ignores it), got {strength}")
    return s


def steps_to_run(steps: int, strength: float) -> int:
    """How many of the sampler's ``steps`` an edit of ``strength`` runs: floor(steps·strength)."""
    return min(int(steps * check_strength(strength)), int(steps))


def invert(predict: Predict, process, x0: torch.Tensor, steps: int, n: int, device) -> torch.Tensor:
    """``x0`` carried by DDIM inversion to the level of the first of the sampler's last ``n`` of ``steps``
    steps (module docstring)."""
    b = x0.shape[0]
    z = x0.clone()
    if process.kind == "flow":
        scheduler = process.scheduler("euler")
        scheduler.set_timesteps(steps, device=device)
        sigmas = scheduler.sigmas.to(torch.float64)  # σ_0 = 1 > ... > σ_{N-1} > σ_N = 0
        for j in range(steps - 1, steps - n - 1, -1):
            here, there = float(sigmas[j + 1]), float(sigmas[j])
            v = predict(z, process.model_timesteps(here * process.num_train_timesteps, b, device))
            z = z + (there - here) * v
        return z
    import inspect

    from diffusers import DDIMInverseScheduler

    accepted = inspect.signature(DDIMInverseScheduler.__init__).parameters  # (it has no thresholding)
    inverse = DDIMInverseScheduler.from_config({k: v for k, v in process.config.items() if k in accepted})
    inverse.set_timesteps(steps, device=device)
    for t in inverse.timesteps[:n]:
        pred = predict(z, process.model_timesteps(t, b, device))
        z = inverse.step(pred, t, z).prev_sample
    return z


@dataclass(frozen=True)
class EditTask(LoopTask):
    """SDEdit of the clean clip ``init`` (B, C, T, H, W) at ``strength``: the sampler's last floor(steps·strength)
    steps, started from ``init`` noised with the initial noise, or, with ``inversion``, carried there by DDIM
    inversion under ``inversion_cond`` (None: the null condition of the sampling condition)."""

    init: torch.Tensor
    strength: float
    inversion: bool = False
    inversion_cond: Optional[Any] = None

    def __post_init__(self):
        check_strength(self.strength)

    def check(self, shape, tasks=()) -> None:
        if tuple(self.init.shape) != tuple(shape):
            raise EditError(f"the clip to edit has shape {tuple(self.init.shape)} but the sample is {tuple(shape)}")
        if any(task.extra_passes for task in tasks):
            raise EditError("FreeInit restarts sampling from pure noise, which an edit does not do; "
                            "leave out the FreeInitTask or give it iters=0")

    def steps_to_run(self, steps: int) -> int:
        return steps_to_run(steps, self.strength)

    def begin(self, x: torch.Tensor, state: PassState) -> torch.Tensor:
        """The input at the first timestep that runs (strength 1: the prior's noise itself, ``x``)."""
        if not state.partial:
            return x
        init = self.init.to(device=state.settings.device, dtype=state.settings.dtype)
        if state.steps_run == 0:
            return init.clone()
        if self.inversion:
            null = self.inversion_cond
            if null is None and state.cond is not None:
                null = state.cond.null()
            return invert(lambda z, tt: state.model(z, tt, null), state.process, init, state.settings.steps,
                          state.steps_run, state.settings.device)
        return state.process.add_noise(init, state.start, state.model_timesteps(state.timesteps[0]))

    @property
    def batch_clip(self) -> torch.Tensor:
        return self.init

    def encoded(self, encode) -> "EditTask":
        return replace(self, init=encode(self.init, "the clip to edit"))
