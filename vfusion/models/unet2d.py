"""Building and loading diffusers 2D UNets (the image networks every model here uses).

A UNet comes either from a local diffusers checkpoint directory (a model folder with
``config.json`` + weights, or a pipeline folder whose ``unet/`` subfolder holds it)
or from the :class:`vfusion.config.UNetConfig` keys. Class conditioning uses the
UNet's own class embedding with ``num_classes + 1`` entries: the last one is the
"no label" entry used by classifier-free guidance.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch
from diffusers import UNet2DConditionModel, UNet2DModel
from torch import nn

from vfusion.models.shapes import level_sizes
from vfusion.errors import UserError

log = logging.getLogger(__name__)

UNET_CLASSES = {"UNet2DModel": UNet2DModel, "UNet2DConditionModel": UNet2DConditionModel}


class CheckpointError(UserError, RuntimeError):
    """A checkpoint directory that cannot be used as asked."""


def find_unet_dir(path: str | Path, subfolder: Optional[str] = None) -> Path:
    """The folder holding the UNet's ``config.json`` (``path``, ``path/subfolder`` or ``path/unet``)."""
    root = Path(path)
    if not root.exists():
        raise CheckpointError(f"UNet checkpoint '{root}' does not exist (expected a diffusers model directory "
                              "with config.json, e.g. written by `vfusion pretrain-base` or `save_pretrained`)")
    candidates = [root / subfolder] if subfolder else [root, root / "unet"]
    for c in candidates:
        if (c / "config.json").is_file():
            return c
    raise CheckpointError(f"no diffusers UNet config.json found in {' or '.join(str(c) for c in candidates)}; "
                          "point model.base.pretrained at a model folder or a pipeline folder with a unet/ subfolder")


def read_model_config(unet_dir: Path) -> dict:
    """``config.json`` of a diffusers model folder, or an error naming the file."""
    from vfusion.backbones.folder import read_json

    return read_json(Path(unet_dir) / "config.json", CheckpointError, "diffusers config", "model")


def unet_class_of(unet_dir: Path) -> type:
    name = read_model_config(unet_dir).get("_class_name")
    if name not in UNET_CLASSES:
        raise CheckpointError(f"{unet_dir}/config.json describes a '{name}', not a 2D UNet "
                              f"({' or '.join(UNET_CLASSES)}); choose the UNet folder of the checkpoint")
    return UNET_CLASSES[name]


def load_unet(path: str | Path, subfolder: Optional[str] = None, num_class_embeds: Optional[int] = None) -> nn.Module:
    """``from_pretrained`` on a local directory, adding a class embedding when asked.

    When the dataset is class-conditional but the checkpoint has no class embedding
    (e.g. an unconditional pretrained model), the embedding is added and zero-initialised,
    so the loaded network initially behaves exactly like the checkpoint.
    """
    unet_dir = find_unet_dir(path, subfolder)
    cls = unet_class_of(unet_dir)
    have = read_model_config(unet_dir).get("num_class_embeds")
    if num_class_embeds and have not in (None, num_class_embeds):
        raise CheckpointError(f"{unet_dir} has a class embedding for {have - 1} classes (+1 null) but the dataset "
                              f"has {num_class_embeds - 1}; use a checkpoint trained on this dataset or an "
                              "unconditional one")
    kwargs = {"low_cpu_mem_usage": False}  # plain loading (no accelerate needed, and no notice about it)
    if num_class_embeds and have is None:
        kwargs["num_class_embeds"] = num_class_embeds
    try:
        model = cls.from_pretrained(str(unet_dir), **kwargs)
    except (OSError, ValueError, RuntimeError, TypeError, EnvironmentError) as err:  # missing/truncated weights, bad keys
        raise CheckpointError(f"cannot load the UNet in {unet_dir}: {' '.join(str(err).split())[:300]} — check that "
                              "its weights file is complete (re-save it with save_pretrained)") from err
    if "num_class_embeds" in kwargs:
        nn.init.zeros_(model.class_embedding.weight)
        log.info("added a zero-initialised class embedding (%d entries) to %s", num_class_embeds, unet_dir)
    return model


def build_unet(cfg, in_channels: int, out_channels: int, sample_size: int,
               num_class_embeds: Optional[int] = None, class_embed_type: Optional[str] = None,
               text_dim: int = 0) -> nn.Module:
    """A fresh UNet from :class:`UNetConfig` keys.

    ``class_embed_type="identity"`` makes the UNet add an externally computed
    embedding (of the time-embedding width) to its time embedding; the residual
    generator uses that for frame index + class. ``text_dim`` > 0 makes it a
    Stable Diffusion-style UNet2DConditionModel that cross-attends to text states
    of that width at the attention levels (and in its middle block), whatever ``arch``.
    """
    attn = attention_levels(cfg, sample_size)
    common = dict(sample_size=sample_size, in_channels=in_channels, out_channels=out_channels,
                  block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
                  norm_num_groups=cfg.norm_num_groups, num_class_embeds=num_class_embeds,
                  class_embed_type=class_embed_type)
    if text_dim:
        down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn)
        up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn))
        return UNet2DConditionModel(down_block_types=down, up_block_types=up,
                                    mid_block_type="UNetMidBlock2DCrossAttn", cross_attention_dim=int(text_dim),
                                    attention_head_dim=8, **common)
    if cfg.arch == "unet2d":
        down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn)
        up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn))
        return UNet2DModel(down_block_types=down, up_block_types=up, attention_head_dim=8,
                           add_attention=cfg.attention, **common)
    # UNet2DConditionModel without cross-attention: class conditioning only, no text
    down = tuple("DownBlock2D" for _ in attn)
    up = tuple("UpBlock2D" for _ in attn)
    return UNet2DConditionModel(down_block_types=down, up_block_types=up, mid_block_type="UNetMidBlock2D",
                                cross_attention_dim=8, attention_head_dim=8, **common)


def attention_levels(cfg, sample_size: int) -> list[bool]:
    """Which levels of a fresh UNet get attention blocks (``attention`` and ``attention_resolutions``)."""
    levels = len(cfg.block_out_channels)
    wanted = getattr(cfg, "attention_resolutions", None) if cfg.attention else None
    wanted = level_sizes(wanted, levels, sample_size, "attention_resolutions")
    if wanted is None:
        return [bool(cfg.attention) and i >= max(1, levels - 2) for i in range(levels)]
    return [sample_size // 2 ** i in wanted for i in range(levels)]


def time_embed_dim(unet: nn.Module) -> int:
    return unet.time_embedding.linear_2.out_features


def unet_forward(unet: nn.Module, x: torch.Tensor, t: torch.Tensor, class_labels: Optional[torch.Tensor] = None,
                 context: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Call either diffusers UNet class with one signature; returns the prediction tensor."""
    if isinstance(unet, UNet2DConditionModel):
        if context is None:
            if has_cross_attention(unet):
                raise ValueError("a text UNet (cross-attention blocks) called without text states; the base folder's "
                                 "text encoder provides them (vfusion.text)")
            # the project's class UNet of this class has no cross-attention: a placeholder context token
            dim = unet.config.cross_attention_dim
            dim = dim[0] if isinstance(dim, (list, tuple)) else dim
            context = x.new_zeros(x.shape[0], 1, dim)
        return unet(x, t, encoder_hidden_states=context, class_labels=class_labels).sample
    return unet(x, t, class_labels=class_labels).sample


def has_cross_attention(unet: nn.Module) -> bool:
    blocks = list(unet.config.get("down_block_types") or []) + list(unet.config.get("up_block_types") or [])
    return any("CrossAttn" in b for b in blocks + [unet.config.get("mid_block_type") or ""])


def count_parameters(module: nn.Module) -> dict:
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    return {"trainable": trainable, "frozen": frozen, "total": trainable + frozen}
