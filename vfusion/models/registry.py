"""Model registry: ``model.name`` -> the model class (imported on first use; this module is torch-free).

Every registered class has the same three entry points:

- ``build(cfg, spec)``: a fresh model for training from the experiment config;
- ``pipeline_components()``: the named modules a :class:`vfusion.VideoFusionPipeline` saves
  (``base``: a diffusers image model folder; ``residual``; ``denoiser``);
- ``from_pipeline_components(components, spec)``: the model again from those modules.
"""

from __future__ import annotations

from vfusion.utils.registry import choose, load_entry

# model.base.arch / model.residual.arch: the diffusers UNet class a fresh UNet is built with
UNET_ARCHS = ("unet2d", "unet2d_condition")

MODELS = {
    "videofusion": "vfusion.models.videofusion:VideoFusion",
    "video_unet": "vfusion.models.video_unet:VideoUNet",
    "dit": "vfusion.models.dit:SpacetimeDiT",
    # stage 1: the base image UNet on one-frame clips (its diffusers folder is what stage 2 loads)
    "image_unet": "vfusion.models.image_unet:ImageUNet",
}


def model_names() -> tuple[str, ...]:
    return tuple(MODELS)


def model_class(name: str) -> type:
    return load_entry(choose(MODELS, name, "model.name"))


def build_model(cfg, spec):
    """Build ``cfg.model.name`` for the data/diffusion described by ``spec``."""
    return model_class(cfg.model.name).build(cfg, spec)


def assemble_model(name: str, components: dict, spec):
    """The model ``name`` from its pipeline components."""
    return model_class(name).from_pipeline_components(components, spec)
