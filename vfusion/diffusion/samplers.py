"""The sampler registry: a sampler name -> which diffusers scheduler runs it, and how.

Torch-free on purpose (config validation reads the names). The schedulers are built by
:meth:`vfusion.diffusion.process.DiffusionProcess.scheduler` from the process's own
scheduler config, so every sampler uses the run's noise schedule and prediction type.
"""

from __future__ import annotations

from dataclasses import dataclass, field


# what a network of a run may predict (vfusion.diffusion.process.DiffusionProcess)
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
# diffusion.kind: variance-preserving diffusion (DiffusionProcess) | rectified flow (FlowProcess)
PROCESS_KINDS = ("ddpm", "flow")


@dataclass(frozen=True)
class SamplerSpec:
    scheduler_class: str            # a diffusers scheduler class name
    stochastic: bool = False        # draws fresh noise every step (taken from the run's noise prior)
    overrides: dict = field(default_factory=dict)   # scheduler config keys this sampler sets
    step_kwargs: dict = field(default_factory=dict)  # extra keyword arguments of ``scheduler.step``
    description: str = ""


SAMPLERS: dict[str, SamplerSpec] = {
    # Ancestral DDPM sampling (posterior variance). Run as DDIM with η = 1, the same update,
    # because unlike DDPMScheduler.step it takes the step's fresh noise as an argument, so
    # that noise can come from the run's (decomposed) noise prior; tests/test_sampling.py
    # checks it against DDPMScheduler step for step.
    "ddpm": SamplerSpec("DDIMScheduler", stochastic=True,
                        step_kwargs={"eta": 1.0, "use_clipped_model_output": True},
                        description="ancestral DDPM (DDIM, eta=1, noise from the run's prior)"),
    "ddim": SamplerSpec("DDIMScheduler", description="deterministic DDIM (eta=0)"),
    "dpm": SamplerSpec("DPMSolverMultistepScheduler", overrides={"algorithm_type": "dpmsolver++", "solver_order": 2},
                       description="DPM-Solver++ (2nd order, deterministic)"),
}


def sampler_names() -> tuple[str, ...]:
    return tuple(SAMPLERS)


def sampler_spec(name: str) -> SamplerSpec:
    if name not in SAMPLERS:
        from vfusion.errors import UserError

        raise UserError(f"unknown sampler '{name}'; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]
