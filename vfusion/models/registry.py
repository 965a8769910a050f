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


# model.base.class_map
CLASS_MAPS = ("fresh", "checkpoint")


def check_model_section(cfg) -> None:
    """The ``model`` section: registered names, a prior the model can use, and sizes it can take."""
    from vfusion.config import ConfigError, at_least, check_choice
    from vfusion.diffusion.priors import KEYFRAME_BASE_PRIORS
    from vfusion.models.shapes import check_model_shapes

    m = cfg.model
    check_choice(m.name, model_names(), "model.name")
    check_choice(m.base.arch, UNET_ARCHS, "model.base.arch")
    check_choice(m.residual.arch, UNET_ARCHS, "model.residual.arch")
    if m.name == "videofusion" and cfg.noise.prior not in KEYFRAME_BASE_PRIORS:
        raise ConfigError(f"config key 'noise.prior' is '{cfg.noise.prior}', but VideoFusion needs a prior with a "
                          "shared keyframe base: use noise.prior=decomposed (noise.value=0 for independent noise off "
                          f"the keyframe), or a baseline (model.name=video_unet or dit) for '{cfg.noise.prior}'")
    check_choice(m.base.class_map, CLASS_MAPS, "model.base.class_map")
    if m.text.template.count("{}") != 1:
        raise ConfigError(f"config key 'model.text.template' is '{m.text.template}'; it needs exactly one {{}} "
                          "where the class name goes, e.g. 'a video of {}'")
    if not 0.0 <= m.class_dropout < 1.0:
        raise ConfigError(f"config key 'model.class_dropout' is {m.class_dropout}; expected a value in [0, 1)")
    at_least(cfg, ("model.residual.frame_embed_dim",), 1)
    at_least(cfg, ("model.text.cache_size",), 0)
    at_least(cfg, ("model.text.random_layers",), 1)
    if m.text.random_width < 2 or m.text.random_width % 2:
        raise ConfigError(f"config key 'model.text.random_width' is {m.text.random_width}; the random text encoder "
                          "has 2 attention heads, so use an even width >= 2 (e.g. 32)")
    check_model_shapes(cfg)
