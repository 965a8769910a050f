"""The sampling loop: any denoiser, the run's process (DiffusionProcess or FlowProcess), any noise prior.

The initial noise AND the fresh noise of each stochastic step come from the same noise prior the model was trained
with (shared b', per-frame r' for the decomposed prior), otherwise the sampler would break the structure the model
learned (method.md, "Sampling"). The model predicts the process's target; the diffusers scheduler is configured with
the same prediction type. Given a seeded generator the result is deterministic. :class:`vfusion.VideoFusionPipeline`
calls this loop.

How it runs is one :class:`~vfusion.diffusion.loop_settings.LoopSettings`; what else it does comes from task
objects beside it (:mod:`vfusion.diffusion.task`): given frames, an SDEdit or inversion edit, FreeInit's passes.
"""

from __future__ import annotations

import copy
from typing import Callable, Optional, Sequence

import torch
from tqdm.auto import tqdm

from vfusion.conditioning import Cond
from vfusion.diffusion.known import renoise
from vfusion.diffusion.loop_settings import LoopSettings
from vfusion.diffusion.samplers import sampler_spec
from vfusion.diffusion.task import LoopTask, PassState

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
def sample_loop(model: Denoiser, process, noise, shape: Sequence[int], settings: LoopSettings,
                cond: Optional[Cond] = None, generator: Optional[torch.Generator] = None,
                latents: Optional[torch.Tensor] = None, tasks: Sequence[LoopTask] = (),
                callback: Optional[Callable[[int], None]] = None) -> torch.Tensor:
    """Run the reverse process; returns ``x_0`` of ``shape`` (B, C, T, H, W).

    ``latents``: the initial noise (B, C, T, H, W) instead of a draw from ``noise`` (as the diffusers
    pipelines' ``latents=``); the stochastic steps still draw from ``noise``. ``tasks`` change the loop at
    the points :mod:`vfusion.diffusion.task` names. ``callback(i)`` counts the steps of all passes.
    """
    sampler, steps, device, dtype = settings.sampler, settings.steps, settings.device, settings.dtype
    spec = sampler_spec(sampler)
    b = shape[0]
    if latents is not None and tuple(latents.shape) != tuple(shape):
        from vfusion.errors import UserError

        raise UserError(f"latents have shape {tuple(latents.shape)} but the sample is {tuple(shape)}")
    for task in tasks:
        task.check(shape, tasks)
    n_run = min([steps] + [task.steps_to_run(steps) for task in tasks])
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
    passes = 1 + sum(task.extra_passes for task in tasks)
    jumps = sum(task.jumps for task in tasks)
    x = None
    for p in range(passes):
        scheduler = process.scheduler(sampler)  # fresh per pass: multistep solvers keep state
        scheduler.set_timesteps(steps, device=device)
        timesteps = scheduler.timesteps[steps - n_run:] if n_run < steps else scheduler.timesteps
        # flow-matching schedulers start at σ = 1 from the noise itself and have neither of these
        init_sigma = getattr(scheduler, "init_noise_sigma", 1.0)
        scale_input = getattr(scheduler, "scale_model_input", None)
        if 0 < n_run < steps and hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(steps - n_run)
        state = PassState(model, process, tuple(shape), settings, cond, start, timesteps, n_run, init_sigma,
                          draw_noise)
        if p == 0:
            x = start * init_sigma
            for task in tasks:
                x = task.begin(x, state)
        else:
            for task in tasks:
                x = task.restart(x, state)
        step_kwargs = dict(spec.step_kwargs)
        desc = f"sampling ({sampler}, {len(timesteps)} steps{f', pass {p + 1}/{passes}' if passes > 1 else ''})"
        for i, t in enumerate(tqdm(timesteps, desc=desc, disable=not settings.progress, leave=False)):
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
                pred = guided(model, x_in, tt, cond, settings.guidance_scale)
                for task in tasks:
                    pred = task.prediction(pred, x, tt, process)
                if spec.stochastic:
                    # the step's fresh noise lands at the next timestep's level
                    step_kwargs["variance_noise"] = draw_noise(None if last else timesteps[i + 1])
                x = scheduler.step(pred, t, x, **step_kwargs).prev_sample
            if callback is not None:
                callback(p * len(timesteps) + i)
        for task in tasks:
            x = task.finish(x)
    return x
