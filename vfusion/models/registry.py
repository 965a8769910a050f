"""Model registry: ``model.name`` -> builder ``(cfg, spec) -> nn.Module``.

Builders are imported lazily so one model's optional dependencies never slow
down or break another's.
"""

from __future__ import annotations

import importlib

from torch import nn

from vfusion.models.spec import ModelSpec

MODELS = {
    "videofusion": "vfusion.models.videofusion:build_videofusion",
    "video_unet": "vfusion.models.video_unet:build_video_unet",
    "dit": "vfusion.models.dit:build_dit",
}


def build_model(cfg, spec: ModelSpec) -> nn.Module:
    """Build ``cfg.model.name`` for the data/diffusion described by ``spec``."""
    name = cfg.model.name
    if name not in MODELS:
        raise ValueError(f"unknown model.name '{name}'; expected one of {', '.join(MODELS)}")
    module_name, func = MODELS[name].split(":")
    return getattr(importlib.import_module(module_name), func)(cfg, spec)
