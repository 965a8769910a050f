"""The sampler registry: a sampler name -> which diffusers scheduler runs it, and how.

Torch-free on purpose (config validation reads the names). The schedulers are built by the
process's ``scheduler(name)`` (:class:`vfusion.diffusion.process.DiffusionProcess`,
:class:`vfusion.diffusion.flow.FlowProcess`) from the process's own scheduler config, so every
sampler uses the run's noise schedule and prediction type. A sampler runs on the process kinds
its spec lists (``processes``); the process refuses the others with the fix.

On a flow process every sampler it accepts is the deterministic Euler step of the flow ODE
(diffusers' ``FlowMatchEulerDiscreteScheduler``): ``euler`` by name, and ``ddim``, the project's
default deterministic sampler, whose VP update is the counterpart of that step.
"""

from __future__ import annotations

from dataclasses import dataclass, field


# what a network of a run may predict (vfusion.diffusion.process.DiffusionProcess)
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
# the process kinds (``kind`` of DiffusionProcess / FlowProcess) and what a flow network predicts
PROCESS_KINDS = ("ddpm", "flow")
FLOW_PREDICTION = "flow_prediction"


@dataclass(frozen=True)
class SamplerSpec:
    scheduler_class: str            # a diffusers scheduler class name
    stochastic: bool = False        # draws fresh noise every step (taken from the run's noise prior)
    overrides: dict = field(default_factory=dict)   # scheduler config keys this sampler sets
    step_kwargs: dict = field(default_factory=dict)  # extra keyword arguments of ``scheduler.step``
    description: str = ""
    processes: tuple[str, ...] = ("ddpm",)           # the process kinds it runs on (PROCESS_KINDS)


SAMPLERS: dict[str, SamplerSpec] = {
    # Ancestral DDPM sampling (posterior variance). Run as DDIM with η = 1, the same update,
    # because unlike DDPMScheduler.step it takes the step's fresh noise as an argument, so
    # that noise can come from the run's (decomposed) noise prior; tests/test_sampling.py
    # checks it against DDPMScheduler step for step.
    "ddpm": SamplerSpec("DDIMScheduler", stochastic=True,
                        step_kwargs={"eta": 1.0, "use_clipped_model_output": True},
                        description="ancestral DDPM (DDIM, eta=1, noise from the run's prior)"),
    "ddim": SamplerSpec("DDIMScheduler", processes=("ddpm", "flow"),
                        description="deterministic DDIM (eta=0); on a flow process the Euler step"),
    "dpm": SamplerSpec("DPMSolverMultistepScheduler", overrides={"algorithm_type": "dpmsolver++", "solver_order": 2},
                       description="DPM-Solver++ (2nd order, deterministic)"),
    # The flow ODE dz/dσ = v, one Euler step per σ of the scheduler's grid (a flow process only).
    "euler": SamplerSpec("FlowMatchEulerDiscreteScheduler", processes=("flow",),
                         description="deterministic Euler on the flow ODE (rectified flow)"),
}


def sampler_names() -> tuple[str, ...]:
    return tuple(SAMPLERS)


def samplers_for(kind: str) -> tuple[str, ...]:
    """The samplers that run on a process of this kind."""
    return tuple(name for name, spec in SAMPLERS.items() if kind in spec.processes)


def sampler_spec(name: str) -> SamplerSpec:
    if name not in SAMPLERS:
        from vfusion.errors import UserError

        raise UserError(f"unknown sampler '{name}'; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def check_diffusion_section(cfg) -> None:
    """The ``diffusion`` and ``sample`` sections: a known process kind and prediction, a sampler that runs
    on that kind, step counts the process has, FreeInit's filter in range."""
    from vfusion.config import ConfigError, at_least, check_choice

    diff, s = cfg.diffusion, cfg.sample
    check_choice(s.sampler, sampler_names(), "sample.sampler")
    if diff.prediction_type is not None:
        check_choice(diff.prediction_type, PREDICTION_TYPES, "diffusion.prediction_type")
    if diff.kind is not None:
        check_choice(diff.kind, PROCESS_KINDS, "diffusion.kind")
    kind = diff.kind or "ddpm"  # unset: resolved later (a flow checkpoint makes it flow, checked again)
    if s.sampler not in samplers_for(kind) and (diff.kind or s.sampler != "euler"):
        raise ConfigError(f"config key 'sample.sampler' is '{s.sampler}', which does not sample a {kind} "
                          f"process; use one of {', '.join(samplers_for(kind))}")
    if s.free_init_iters < 0 or s.free_init_order < 1:
        raise ConfigError(f"config keys 'sample.free_init_iters' ({s.free_init_iters}) and 'sample.free_init_order' "
                          f"({s.free_init_order}) must be >= 0 and >= 1")
    for key in ("free_init_ds", "free_init_dt"):
        if not 0.0 < s[key] <= 1.0:
            raise ConfigError(f"config key 'sample.{key}' is {s[key]}; expected a normalised cut-off in (0, 1]")
    at_least(cfg, ("sample.steps", "sample.num_videos", "sample.batch_size", "sample.fps"), 1)
    at_least(cfg, ("sample.guidance_scale",), 0.0)
    steps_t = diff.num_train_timesteps  # unset: checked once the process is resolved (check_sampling)
    if steps_t is not None:
        at_least(cfg, ("diffusion.num_train_timesteps",), 1)
        if s.steps > steps_t:
            raise ConfigError(f"config key 'sample.steps' is {s.steps}; a sampler takes at most the "
                              f"{steps_t} training timesteps (diffusion.num_train_timesteps)")
