"""The run's noise process: the base checkpoint's own scheduler, else the experiment's keys.

A pretrained image model only works with the noise process it was trained with (its betas, its prediction type, its
timestep spacing). So when ``model.base.pretrained`` has a ``scheduler/scheduler_config.json``
(:mod:`vfusion.backbones.folder`), that file IS the run's process, whatever its scheduler class (any
variance-preserving diffusers scheduler maps onto the same beta schedule; a flow-matching one selects rectified
flow). The experiment's ``diffusion`` keys then only fill what the checkpoint leaves open; a key set there that
differs from the checkpoint's value fails with one line naming both values, unless
``diffusion.override_checkpoint`` is true (then the key wins and a warning says so). Without a checkpoint
scheduler, the keys that are set win over the project's defaults. :func:`resolve_process` returns the scheduler
config the process is built from and the resolved ``diffusion`` section written into the run's ``config.yaml``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from vfusion.diffusion.process import FLOW_SCHEDULERS, PROJECT_DDPM
from vfusion.diffusion.samplers import PREDICTION_TYPES
from vfusion.errors import UserError

log = logging.getLogger(__name__)

# variance-preserving diffusers schedulers: all read the same beta-schedule keys
VP_SCHEDULERS = ("DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "LMSDiscreteScheduler", "EulerDiscreteScheduler",
                 "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler",
                 "HeunDiscreteScheduler", "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
                 "UniPCMultistepScheduler", "DEISMultistepScheduler", "DDIMParallelScheduler", "DDPMParallelScheduler",
                 "LCMScheduler", "TCDScheduler", "DPMSolverSDEScheduler")

PROJECT_FLOW = {"num_train_timesteps": 1000, "shift": 1.0}
KEYS = {"ddpm": tuple(PROJECT_DDPM), "flow": tuple(PROJECT_FLOW)}
SECTION_KEYS = ("kind",) + tuple(dict.fromkeys(KEYS["ddpm"] + KEYS["flow"]))


class ProcessConflictError(UserError):
    """An experiment's diffusion key that contradicts the base checkpoint's scheduler."""


@dataclass
class ResolvedProcess:
    kind: str                            # ddpm | flow
    scheduler_config: dict               # what the process is built from
    section: dict                        # the resolved ``diffusion`` section (every key; null where n/a)
    source: str                          # where the values came from, for the log
    overridden: list = field(default_factory=list)  # keys set against the checkpoint (override_checkpoint)


def scheduler_kind(config: dict, where: str) -> str:
    """``ddpm`` or ``flow`` for a diffusers scheduler config, or one error naming the class."""
    name = config.get("_class_name")
    if name in FLOW_SCHEDULERS:
        return "flow"
    if name in VP_SCHEDULERS or (name is None and "beta_schedule" in config):
        return "ddpm"
    raise UserError(f"{where}: scheduler class '{name}' is not supported; the project trains with variance-preserving "
                    f"beta schedules ({', '.join(VP_SCHEDULERS[:4])}, ...) or flow matching ({', '.join(FLOW_SCHEDULERS)})")


def _full(kind: str, config: dict) -> dict:
    """The config with the scheduler class's own defaults filled in (what diffusers would use)."""
    from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

    cls = FlowMatchEulerDiscreteScheduler if kind == "flow" else DDIMScheduler
    return dict(cls.from_config(config).config)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-15)
        except (TypeError, ValueError):
            return False
    return a == b


def resolve_process(section: dict, checkpoint: Optional[dict] = None, checkpoint_file: Optional[str] = None,
                    override: bool = False) -> ResolvedProcess:
    """The process of a run from its ``diffusion`` section (null = unset) and the checkpoint's scheduler."""
    explicit = {k: v for k, v in dict(section).items() if k in SECTION_KEYS and v is not None}
    if checkpoint is not None:
        where = str(checkpoint_file or "the base checkpoint's scheduler")
        kind = scheduler_kind(checkpoint, where)
        theirs = _full(kind, checkpoint)
        conflicts = []
        for key, mine in explicit.items():
            if key == "kind":
                if mine != kind:
                    conflicts.append((key, mine, kind))
            elif key not in KEYS[kind]:
                conflicts.append((key, mine, f"(none: a {'rectified-flow' if kind == 'flow' else 'diffusion'} model)"))
            elif not _same(mine, theirs.get(key)):
                conflicts.append((key, mine, theirs.get(key)))
        if conflicts and not override:
            key, mine, ck = conflicts[0]
            more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
            raise ProcessConflictError(
                f"diffusion.{key} is {mine!r} in the experiment but {ck!r} in the base checkpoint's scheduler ({where})"
                f"{more}; remove the key or set diffusion.{key}=null to use the checkpoint's value, or set "
                "diffusion.override_checkpoint=true")
        config = dict(checkpoint)
        overridden = []
        if conflicts:
            if any(k == "kind" or k not in KEYS[kind] for k, _, _ in conflicts):
                raise ProcessConflictError(f"diffusion.{conflicts[0][0]} cannot override the base checkpoint's process "
                                           f"kind ({kind}, {where}); a pretrained model runs only with its own kind")
            for key, mine, ck in conflicts:
                config[key] = mine
                overridden.append(key)
            log.warning("diffusion.override_checkpoint: training with %s instead of the base checkpoint's %s (%s)",
                        ", ".join(f"{k}={m!r}" for k, m, _ in conflicts),
                        ", ".join(f"{c!r}" for _, _, c in conflicts), where)
        source = f"the base checkpoint's scheduler ({where})"
    else:
        kind = explicit.get("kind", "ddpm")
        defaults = PROJECT_FLOW if kind == "flow" else PROJECT_DDPM
        for key in explicit:
            if key != "kind" and key not in KEYS[kind]:
                raise UserError(f"diffusion.{key} does not apply to diffusion.kind={kind}; remove it")
        config = {**defaults, **{k: v for k, v in explicit.items() if k != "kind"}}
        if kind == "flow":
            config["_class_name"] = "FlowMatchEulerDiscreteScheduler"
        source = "the experiment's diffusion section"
        overridden = []
    full = _full(kind, config)
    if kind == "ddpm" and full.get("prediction_type") not in PREDICTION_TYPES:
        raise UserError(f"{source}: prediction_type '{full.get('prediction_type')}' is not supported; the project "
                        f"trains {', '.join(PREDICTION_TYPES)} (and rectified flow with a flow-matching scheduler)")
    resolved = {k: None for k in SECTION_KEYS}
    resolved["kind"] = kind
    for key in KEYS[kind]:
        value = full.get(key)
        resolved[key] = list(value) if isinstance(value, tuple) else value
    return ResolvedProcess(kind, config, resolved, source, overridden)
