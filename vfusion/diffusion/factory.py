"""Which process a scheduler config describes.

The two process kinds share one interface (:class:`vfusion.diffusion.process.DiffusionProcess`,
variance-preserving; :class:`vfusion.diffusion.flow.FlowProcess`, rectified flow); :func:`make_process` is
the one place that chooses between them, and the one public way to build a process: from a scheduler
config, or a saved one (``make_process(read_config(folder))``; an experiment's is
:func:`vfusion.backbones.adopt.experiment_process`).
"""

from __future__ import annotations

from vfusion.diffusion.flow import FlowProcess
from vfusion.diffusion.process import FLOW_SCHEDULERS, DiffusionProcess, ProcessError
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
