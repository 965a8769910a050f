"""Which process a scheduler config, a saved folder or an experiment section describes.

The two process kinds share one interface (:class:`vfusion.diffusion.process.DiffusionProcess`,
variance-preserving; :class:`vfusion.diffusion.flow.FlowProcess`, rectified flow); this module is the
one place that chooses between them, so neither imports the other's chooser.
"""

from __future__ import annotations

from pathlib import Path

from vfusion.diffusion.flow import FlowProcess
from vfusion.diffusion.process import FLOW_SCHEDULERS, DiffusionProcess, ProcessError, read_config
from vfusion.diffusion.samplers import PROCESS_KINDS


def make_process(config: dict):
    """The process a scheduler config describes: a :class:`vfusion.diffusion.flow.FlowProcess` when its
    ``_class_name`` is a flow-matching scheduler or ``kind`` is ``flow``, else a :class:`DiffusionProcess`."""
    cfg = dict(config)
    kind = cfg.get("kind")
    if kind is not None and kind not in PROCESS_KINDS:
        raise ProcessError(f"unknown process kind '{kind}'; expected one of {', '.join(PROCESS_KINDS)}")
    flow_class = cfg.get("_class_name") in FLOW_SCHEDULERS
    if kind == "ddpm" and flow_class:
        raise ProcessError(f"kind 'ddpm' contradicts the flow-matching scheduler {cfg['_class_name']}; "
                           "drop 'kind' or set it to 'flow'")
    if flow_class or kind == "flow":
        return FlowProcess(cfg)
    return DiffusionProcess(cfg)



def load_process(path: str | Path):
    """The process saved at ``path`` (a ``scheduler_config.json``, a folder, or ``scheduler/`` of it)."""
    return make_process(read_config(path))


def process_from_section(section):
    """The process of an experiment's ``diffusion`` section alone (unset keys: the project's defaults;
    :func:`vfusion.backbones.adopt.experiment_process` also looks at the base checkpoint)."""
    from vfusion.diffusion.resolve import resolve_process

    return make_process(resolve_process(section_dict(section)).scheduler_config)


def section_dict(section) -> dict:
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(section, resolve=True) if isinstance(section, DictConfig) else dict(section)
