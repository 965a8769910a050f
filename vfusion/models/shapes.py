"""Sizes a model can take: feature-map levels, down-sampling and patches (torch-free).

The config check runs these before anything is written; building the networks runs
:func:`level_sizes` again at the size they really see (latents included).
"""

from __future__ import annotations

from typing import Optional

from omegaconf import DictConfig

from vfusion.config import ConfigError


def level_sizes(wanted, levels: int, sample_size: int, key: str) -> Optional[set[int]]:
    """The feature-map sizes a list like ``attention_resolutions`` names, checked against the sizes
    of a UNet's ``levels`` at input ``sample_size`` (each level halves it); None when unset."""
    if wanted is None:
        return None
    sizes = [sample_size // 2 ** i for i in range(levels)]
    unknown = sorted({int(r) for r in wanted} - set(sizes))
    if unknown:
        raise ConfigError(f"config key '{key}' asks for {unknown}, which are not feature-map sizes of this UNet: "
                          f"at input size {sample_size} its levels are {sizes}")
    return {int(r) for r in wanted}


def check_sample_size(cfg: DictConfig, size: int) -> None:
    """The spatial size the networks see (pixels, or latents) fits their down-sampling / patches."""
    name, frames = cfg.model.name, int(cfg.data.num_frames)
    seen = f"the networks see {size}x{size} (data.resolution{', in VAE latents' if cfg.data.vae_path else ''})"
    unets = [("model.base", cfg.model.base)] + ([("model.residual", cfg.model.residual)] if name == "videofusion" else [])
    for key, ucfg in unets if name != "dit" else []:
        if ucfg.pretrained:
            continue
        levels = len(ucfg.block_out_channels)
        factor = 2 ** (levels - 1)
        if size % factor:
            raise ConfigError(f"{seen}, not divisible by {factor}, the down-sampling of {key} "
                              f"({levels} levels in {key}.block_out_channels); use a resolution divisible by "
                              f"{factor} or fewer levels")
        bad = [c for c in ucfg.block_out_channels if c % ucfg.norm_num_groups]
        if bad:
            raise ConfigError(f"{key}.block_out_channels {list(ucfg.block_out_channels)}: {bad} not divisible by "
                              f"{key}.norm_num_groups={ucfg.norm_num_groups}")
    if name == "dit":
        d = cfg.model.dit
        if d.patch_size < 1 or size % d.patch_size:
            raise ConfigError(f"{seen}, not divisible by model.dit.patch_size={d.patch_size}")
        if d.temporal_patch_size < 1 or frames % d.temporal_patch_size:
            raise ConfigError(f"data.num_frames {frames} is not divisible by model.dit.temporal_patch_size="
                              f"{d.temporal_patch_size}")


def check_model_shapes(cfg: DictConfig) -> None:
    """Frame counts and resolutions the chosen model can take."""
    name, frames = cfg.model.name, int(cfg.data.num_frames)
    if name == "videofusion" and frames < 2:
        raise ConfigError(f"config key 'data.num_frames' is {frames}; VideoFusion needs at least 2 frames (a keyframe "
                          "and the frames its residual generator denoises)")
    if cfg.data.vae_path:  # latents: the runner checks the latent size once the VAE is loaded
        return
    res = int(cfg.data.resolution)
    check_sample_size(cfg, res)
    # fresh UNets only: a pretrained base keeps its own blocks (and may bring a VAE: latent sizes)
    if cfg.model.base.pretrained:
        return
    base, residual = cfg.model.base, cfg.model.residual
    if base.attention:
        level_sizes(base.attention_resolutions, len(base.block_out_channels), res, "model.base.attention_resolutions")
    if residual.attention:
        level_sizes(residual.attention_resolutions, len(residual.block_out_channels), res,
                    "model.residual.attention_resolutions")
    if residual.temporal != "none":
        level_sizes(residual.temporal_resolutions, len(residual.block_out_channels), res,
                    "model.residual.temporal_resolutions")
