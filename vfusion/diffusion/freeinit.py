"""FreeInit (Wu et al., "FreeInit: Bridging Initialization Gap in Video Diffusion Models", ECCV 2024).

An inference-time refinement for any model and sampler: a pass's result x_0 is diffused back with the pass's
initial noise ε_0 to the first sampling timestep t_0 (the process's own ``add_noise``: VP or rectified flow), its
low frequencies are kept, the high ones taken from fresh noise ε_fresh of the run's prior, and sampling runs again:

    z_new = IFFT( FFT(add_noise(x_0, ε_0, t_0)) · M + FFT(ε_fresh) · (1 − M) )       FFTs over (T, H, W)
    M = 1 / (1 + r^(2·order)),   r² = (f_t / d_t)² + (f_h / d_s)² + (f_w / d_s)²   (Butterworth low-pass)

with normalised frequencies f ∈ [−1, 1) (1 = Nyquist, ``2 · torch.fft.fftfreq``) and cut-offs d_s (space) and d_t
(time): M = 1 at zero frequency, 1/2 on the ellipsoid r = 1. Each iteration is one more sampling pass, (iters + 1)×
the sampling time in all. Against diffusers' ``FreeInitMixin``: :func:`butterworth_low_pass`, :func:`reinitialise`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from vfusion.config import SampleConfig
from vfusion.diffusion.task import LoopTask, PassState
from vfusion.errors import UserError

FFT_DIMS = (-3, -2, -1)  # (T, H, W) of (B, C, T, H, W)


class FreeInitError(UserError, ValueError):
    """FreeInit settings that cannot be used."""


@dataclass(frozen=True)
class FreeInitTask(LoopTask):
    """FreeInit's settings (the config's ``sample.free_init_*`` keys, whose defaults the filter takes);
    ``iters = 0`` is off; a task made without a count runs 3 extra passes."""

    iters: int = 3
    order: int = SampleConfig.free_init_order
    d_s: float = SampleConfig.free_init_ds
    d_t: float = SampleConfig.free_init_dt

    def __post_init__(self):
        if int(self.iters) != self.iters or self.iters < 0:
            raise FreeInitError(f"free_init_iters must be an integer >= 0, got {self.iters}")
        if int(self.order) != self.order or self.order < 1:
            raise FreeInitError(f"free_init_order must be an integer >= 1, got {self.order}")
        for name, d in (("free_init_ds", self.d_s), ("free_init_dt", self.d_t)):
            if not 0.0 < float(d) <= 1.0:
                raise FreeInitError(f"{name} must be a normalised cut-off in (0, 1], got {d}")

    def mask(self, frames: int, height: int, width: int, device=None) -> torch.Tensor:
        return butterworth_low_pass((frames, height, width), self.d_s, self.d_t, self.order, device=device)

    @property
    def extra_passes(self) -> int:
        return int(self.iters)

    def restart(self, x0: torch.Tensor, state: PassState) -> torch.Tensor:
        """The next pass's start: ``x0`` back to the first timestep, its low frequencies + fresh high ones."""
        if state.init_sigma != 1.0:
            raise ValueError(f"FreeInit needs a sampler that starts from z_t itself (init_noise_sigma = 1), "
                             f"not '{state.settings.sampler}'")
        fresh = state.draw_noise(state.timesteps[0])
        t0 = state.model_timesteps(state.timesteps[0])
        return reinitialise(x0, state.start, fresh, state.process, t0,
                            self.mask(*state.shape[2:], device=state.settings.device))


def butterworth_low_pass(shape: Sequence[int], d_s: float, d_t: float, order: int, device=None,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The low-pass mask M over ``shape[-3:] = (T, H, W)`` in the FFT's own layout (zero frequency at index 0).

    M = 1 / (1 + r^(2·order)) with r² = (f_t/d_t)² + (f_h/d_s)² + (f_w/d_s)² (module docstring). A cut-off
    of 0 passes nothing (M ≡ 0), as in diffusers. This is the filter of diffusers' ``FreeInitMixin`` (and of
    the FreeInit authors' code), whose mask is laid out after ``fftshift``; on even sizes the two agree
    (tests/test_freeinit.py). On odd sizes diffusers' grid, 2k/n − 1, puts the zero frequency 1/n off centre;
    the grid here is the FFT's own, so M is exactly 1 at zero frequency.
    """
    t, h, w = (int(v) for v in shape[-3:])
    if d_s == 0 or d_t == 0:
        return torch.zeros((t, h, w), device=device, dtype=dtype)
    f_t, f_h, f_w = (2.0 * torch.fft.fftfreq(n, dtype=torch.float64) for n in (t, h, w))
    r2 = ((f_t / d_t) ** 2).view(-1, 1, 1) + ((f_h / d_s) ** 2).view(1, -1, 1) + ((f_w / d_s) ** 2).view(1, 1, -1)
    mask = 1.0 / (1.0 + r2 ** order)                                                    # (T, H, W)
    return mask.to(device=device, dtype=dtype)


def mix_frequencies(x_low_source: torch.Tensor, x_high_source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """IFFT(FFT(x_low_source)·M + FFT(x_high_source)·(1 − M)) over the last three dims (T, H, W).

    ``mask`` (T, H, W) in the FFT's layout (:func:`butterworth_low_pass`), broadcast over (B, C). Computed in
    float32 (float64 for float64 inputs); the result has ``x_low_source``'s dtype.
    """
    if x_low_source.shape != x_high_source.shape:
        raise ValueError(f"the two sources differ in shape: {tuple(x_low_source.shape)} vs "
                         f"{tuple(x_high_source.shape)}")
    work = torch.float64 if x_low_source.dtype == torch.float64 else torch.float32
    mask = mask.to(device=x_low_source.device, dtype=work)
    low = torch.fft.fftn(x_low_source.to(work), dim=FFT_DIMS) * mask
    high = torch.fft.fftn(x_high_source.to(work), dim=FFT_DIMS) * (1.0 - mask)
    return torch.fft.ifftn(low + high, dim=FFT_DIMS).real.to(x_low_source.dtype)


def reinitialise(x0: torch.Tensor, initial_noise: torch.Tensor, fresh_noise: torch.Tensor, process,
                 timesteps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """FreeInit's new starting point: ``x0`` diffused to ``timesteps`` (B,) with ``initial_noise`` by the
    process's ``add_noise``, its low frequencies kept, the high ones taken from ``fresh_noise``. diffusers
    diffuses to the last training timestep T − 1; the task passes the first timestep the sampler starts from,
    and either may be given."""
    z = process.add_noise(x0, initial_noise.to(x0.dtype), timesteps)
    return mix_frequencies(z, fresh_noise.to(z.dtype), mask)
