"""The sampling loop: any denoiser, the run's process (DiffusionProcess or FlowProcess), any noise prior.

The initial noise AND the fresh noise of each stochastic step come from the same noise
prior the model was trained with (shared b', per-frame r' for the decomposed prior),
otherwise the sampler would break the structure the model learned (method.md,
"Sampling"). The model predicts the process's target; the diffusers scheduler is
configured with the same prediction type. Given a seeded generator the result is
deterministic. :class:`vfusion.VideoFusionPipeline` calls this loop.

``free_init`` (:class:`vfusion.diffusion.freeinit.FreeInit`) repeats the whole pass ``iters`` more
times, each from the previous result diffused back to the first timestep with the initial noise, its
low space-time frequencies kept and the high ones drawn fresh from the prior
(:func:`vfusion.diffusion.freeinit.reinitialise`).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from tqdm.auto import tqdm

from vfusion.conditioning import Cond
from vfusion.diffusion.freeinit import FreeInit, reinitialise
from vfusion.diffusion.samplers import sampler_spec

Denoiser = Callable[[torch.Tensor, torch.Tensor, Optional[Cond]], torch.Tensor]


def guided(model: Denoiser, x: torch.Tensor, t: torch.Tensor, cond: Optional[Cond],
           guidance_scale: float) -> torch.Tensor:
    """The prediction with classifier-free guidance, u + w (c − u), in one batched call.

    The null condition comes from ``cond.null()``; guidance is linear in the prediction, so it
    is the same in ε, v or x space.
    """
    if cond is None or guidance_scale == 1.0:
        return model(x, t, cond)
    out = model(torch.cat([x, x]), torch.cat([t, t]), Cond.cat(cond, cond.null()))
    c, u = out.chunk(2)
    return u + guidance_scale * (c - u)


@torch.no_grad()
def sample_loop(model: Denoiser, process, noise, shape: Sequence[int], sampler: str = "ddim", steps: int = 50,
                cond: Optional[Cond] = None, guidance_scale: float = 1.0,
                generator: Optional[torch.Generator] = None, device: torch.device | str = "cpu",
                progress: bool = True, dtype: torch.dtype = torch.float32,
                callback: Optional[Callable[[int], None]] = None,
                latents: Optional[torch.Tensor] = None, free_init: Optional[FreeInit] = None) -> torch.Tensor:
    """Run the reverse process; returns ``x_0`` of ``shape`` (B, C, T, H, W).

    ``latents``: the initial noise (B, C, T, H, W) instead of a draw from ``noise`` (as the diffusers
    pipelines' ``latents=``); the stochastic steps still draw from ``noise``. ``free_init``: FreeInit
    refinement passes (module docstring); ``callback(i)`` then counts the steps of all passes.
    """
    spec = sampler_spec(sampler)
    b = shape[0]
    if latents is not None:
        if tuple(latents.shape) != tuple(shape):
            from vfusion.errors import UserError

            raise UserError(f"latents have shape {tuple(latents.shape)} but the sample is {tuple(shape)}")
        start = latents.to(device=device, dtype=dtype)
    else:
        start = noise(shape, generator=generator, device=device, dtype=dtype)
    passes = 1 + (free_init.iters if free_init is not None else 0)
    x = None
    for p in range(passes):
        scheduler = process.scheduler(sampler)  # fresh per pass: multistep solvers keep state
        scheduler.set_timesteps(steps, device=device)
        # flow-matching schedulers start at σ = 1 from the noise itself and have neither of these
        init_sigma = getattr(scheduler, "init_noise_sigma", 1.0)
        scale_input = getattr(scheduler, "scale_model_input", None)
        if p == 0:
            x = start * init_sigma
        else:  # FreeInit: x_0 back to the first timestep, its low frequencies + fresh high ones
            if init_sigma != 1.0:
                raise ValueError(f"FreeInit needs a sampler that starts from z_t itself (init_noise_sigma = 1), "
                                 f"not {type(scheduler).__name__}")
            fresh = noise(shape, generator=generator, device=device, dtype=dtype)
            t0 = process.model_timesteps(scheduler.timesteps[0], b, device)
            x = reinitialise(x, start, fresh, process, t0, free_init.mask(*shape[2:], device=device))
        step_kwargs = dict(spec.step_kwargs)
        desc = f"sampling ({sampler}, {steps} steps{f', pass {p + 1}/{passes}' if passes > 1 else ''})"
        for i, t in enumerate(tqdm(scheduler.timesteps, desc=desc, disable=not progress, leave=False)):
            tt = process.model_timesteps(t, b, device)
            x_in = scale_input(x, t) if scale_input is not None else x
            pred = guided(model, x_in, tt, cond, guidance_scale)
            if spec.stochastic:
                step_kwargs["variance_noise"] = noise(shape, generator=generator, device=device, dtype=dtype)
            x = scheduler.step(pred, t, x, **step_kwargs).prev_sample
            if callback is not None:
                callback(p * len(scheduler.timesteps) + i)
    return x
