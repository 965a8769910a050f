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

import copy
from typing import Callable, Optional, Sequence

import torch
from tqdm.auto import tqdm

from vfusion.conditioning import Cond
from vfusion.diffusion.edit import EditError, invert, steps_to_run
from vfusion.diffusion.freeinit import FreeInit, reinitialise
from vfusion.diffusion.known import KnownFrames, renoise
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
                latents: Optional[torch.Tensor] = None, free_init: Optional[FreeInit] = None,
                known: Optional[KnownFrames] = None, init: Optional[torch.Tensor] = None, strength: float = 1.0,
                inversion: bool = False, inversion_cond: Optional[Cond] = None) -> torch.Tensor:
    """Run the reverse process; returns ``x_0`` of ``shape`` (B, C, T, H, W).

    ``latents``: the initial noise (B, C, T, H, W) instead of a draw from ``noise`` (as the diffusers
    pipelines' ``latents=``); the stochastic steps still draw from ``noise``. ``free_init``: FreeInit
    refinement passes (module docstring); ``callback(i)`` then counts the steps of all passes.
    ``known``: frames given in advance (:mod:`vfusion.diffusion.known`: replacement with the oracle
    prediction, RePaint jumps). ``init`` + ``strength``: SDEdit from the clean clip ``init``, the last
    floor(steps·strength) steps only, started from ``init`` noised with the initial noise, or, with
    ``inversion``, carried there by DDIM inversion under ``inversion_cond`` (default: the null
    condition) (:mod:`vfusion.diffusion.edit`).
    """
    spec = sampler_spec(sampler)
    b = shape[0]
    if latents is not None and tuple(latents.shape) != tuple(shape):
        from vfusion.errors import UserError

        raise UserError(f"latents have shape {tuple(latents.shape)} but the sample is {tuple(shape)}")
    if known is not None:
        known.check(shape)
    n_run = steps
    if init is not None:
        if tuple(init.shape) != tuple(shape):
            raise EditError(f"the clip to edit has shape {tuple(init.shape)} but the sample is {tuple(shape)}")
        if free_init is not None:
            raise EditError("FreeInit restarts sampling from pure noise, which an edit does not do; "
                            "use free_init_iters=0 with a strength")
        n_run = steps_to_run(steps, strength)
        init = init.to(device=device, dtype=dtype)
    timed = getattr(noise, "time_dependent", False)

    def draw_noise(t_level) -> torch.Tensor:
        """A draw of the prior, for the noise level of the scheduler timestep ``t_level`` (None: level 0)
        when the prior's correlation depends on it."""
        if not timed:
            return noise(shape, generator=generator, device=device, dtype=dtype)
        tt = process.model_timesteps(t_level, b, device) if t_level is not None else None
        level = process.noise_level(tt) if tt is not None else torch.zeros(b, dtype=torch.float64)
        return noise(shape, generator=generator, device=device, dtype=dtype, level=level)

    if latents is not None:
        start = latents.to(device=device, dtype=dtype)
    else:  # the first draw of the generator, at the level of the first timestep that runs
        first = None
        if timed and n_run > 0:  # only a time-dependent prior needs that timestep
            grid = process.scheduler(sampler)
            grid.set_timesteps(steps, device=device)
            first = grid.timesteps[steps - n_run]
        start = draw_noise(first)
    passes = 1 + (free_init.iters if free_init is not None else 0)
    x = None
    for p in range(passes):
        scheduler = process.scheduler(sampler)  # fresh per pass: multistep solvers keep state
        scheduler.set_timesteps(steps, device=device)
        timesteps = scheduler.timesteps[steps - n_run:] if n_run < steps else scheduler.timesteps
        # flow-matching schedulers start at σ = 1 from the noise itself and have neither of these
        init_sigma = getattr(scheduler, "init_noise_sigma", 1.0)
        scale_input = getattr(scheduler, "scale_model_input", None)
        if n_run < steps:  # an edit: the input noised (or inverted) to its first timestep
            if n_run == 0:
                return known.paste(init) if known is not None else init.clone()
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(steps - n_run)
            if inversion:
                null = inversion_cond if inversion_cond is not None else (cond.null() if cond is not None else None)
                x = invert(lambda z, tt: model(z, tt, null), process, init, steps, n_run, device)
            else:
                x = process.add_noise(init, start, process.model_timesteps(timesteps[0], b, device))
        elif p == 0:
            x = start * init_sigma
            if known is not None and init_sigma == 1.0:
                x = known.start(x, start, process.model_timesteps(timesteps[0], b, device), process)
        else:  # FreeInit: x_0 back to the first timestep, its low frequencies + fresh high ones
            if init_sigma != 1.0:
                raise ValueError(f"FreeInit needs a sampler that starts from z_t itself (init_noise_sigma = 1), "
                                 f"not {type(scheduler).__name__}")
            fresh = draw_noise(timesteps[0])
            t0 = process.model_timesteps(timesteps[0], b, device)
            x = reinitialise(x, start, fresh, process, t0, free_init.mask(*shape[2:], device=device))
        step_kwargs = dict(spec.step_kwargs)
        desc = f"sampling ({sampler}, {len(timesteps)} steps{f', pass {p + 1}/{passes}' if passes > 1 else ''})"
        jumps = known.jumps if known is not None else 0
        for i, t in enumerate(tqdm(timesteps, desc=desc, disable=not progress, leave=False)):
            tt = process.model_timesteps(t, b, device)
            last = i == len(timesteps) - 1
            repeats = 1 if last else 1 + jumps
            snapshot = copy.deepcopy(scheduler) if repeats > 1 else None
            for r in range(repeats):
                if r > 0:  # RePaint: back from the level just reached to t, and the step again
                    scheduler = copy.deepcopy(snapshot)
                    here = process.model_timesteps(timesteps[i + 1], b, device)
                    x = renoise(x, here, tt, process, draw_noise(t))
                x_in = scale_input(x, t) if scale_input is not None else x
                pred = guided(model, x_in, tt, cond, guidance_scale)
                if known is not None:
                    pred = known.oracle(pred, x, tt, process)
                if spec.stochastic:
                    # the step's fresh noise lands at the next timestep's level
                    step_kwargs["variance_noise"] = draw_noise(None if last else timesteps[i + 1])
                x = scheduler.step(pred, t, x, **step_kwargs).prev_sample
            if callback is not None:
                callback(p * len(timesteps) + i)
        if known is not None:
            x = known.paste(x)
    return x
