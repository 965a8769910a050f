"""The sampling loop: any denoiser, any diffusers scheduler, any noise sampler.

The initial noise AND the fresh noise of each stochastic step come from the same
:class:`~vfusion.diffusion.noise.DecomposedNoise` the model was trained with
(shared b', per-frame r'), otherwise the sampler would break the structure the
model learned (method.md, "Sampling"). Given a seeded generator the result is
deterministic.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from tqdm.auto import tqdm

from vfusion.diffusion.noise import DecomposedNoise
from vfusion.diffusion.process import sampling_scheduler

Denoiser = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


def guided_eps(model: Denoiser, x: torch.Tensor, t: torch.Tensor, labels: Optional[torch.Tensor],
               null_label: Optional[int], guidance_scale: float) -> torch.Tensor:
    """ε̂ with classifier-free guidance: ε̂_u + w (ε̂_c − ε̂_u), one batched call."""
    if labels is None or null_label is None or guidance_scale == 1.0:
        return model(x, t, labels)
    null = torch.full_like(labels, null_label)
    eps = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
    cond, uncond = eps.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


@torch.no_grad()
def sample(model: Denoiser, diff_cfg, noise: DecomposedNoise, shape: Sequence[int], sampler: str = "ddim",
           steps: int = 50, class_labels: Optional[torch.Tensor] = None, null_label: Optional[int] = None,
           guidance_scale: float = 1.0, generator: Optional[torch.Generator] = None,
           device: torch.device | str = "cpu", progress: bool = True, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Run the reverse process; returns ``x_0`` of ``shape`` (B, C, T, H, W)."""
    scheduler = sampling_scheduler(diff_cfg, sampler)
    scheduler.set_timesteps(steps, device=device)
    b = shape[0]
    x = noise(shape, generator=generator, device=device, dtype=dtype) * scheduler.init_noise_sigma
    step_kwargs: dict = {}
    if sampler == "ddpm":
        step_kwargs = {"eta": 1.0, "use_clipped_model_output": True}
    for t in tqdm(scheduler.timesteps, desc=f"sampling ({sampler}, {steps} steps)", disable=not progress, leave=False):
        tt = torch.full((b,), int(t), device=device, dtype=torch.long)
        x_in = scheduler.scale_model_input(x, t)
        eps = guided_eps(model, x_in, tt, class_labels, null_label, guidance_scale)
        if sampler == "ddpm":
            step_kwargs["variance_noise"] = noise(shape, generator=generator, device=device, dtype=dtype)
        x = scheduler.step(eps, t, x, **step_kwargs).prev_sample
    return x
