"""Base generator φ (VideoFusion, method.md step 1): an image diffusion UNet.

It runs once per clip on the noisy keyframe z_t^k and predicts the process's target
for it (VideoFusion converts that to the base noise b̂). Because λ^k = 1, z_t^k is an
ordinary noisy image, so any pretrained diffusers image UNet can serve, loaded with
``from_pretrained(local_dir)``; stage 1 (``vfusion pretrain-base``) writes such a
directory when no suitable checkpoint exists.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from vfusion.conditioning import Cond, label_ids, text_states
from vfusion.models.spec import ModelSpec
from vfusion.models.unet2d import CheckpointError, build_unet, load_unet, unet_forward


def base_unet_from_config(base_cfg, spec: ModelSpec) -> nn.Module:
    """The base UNet: loaded from ``base_cfg.pretrained`` when set, else built fresh."""
    if base_cfg.pretrained:
        unet = load_unet(base_cfg.pretrained, base_cfg.subfolder, num_class_embeds=spec.num_class_embeds)
        if unet.config.in_channels != spec.in_channels:
            raise CheckpointError(f"base UNet '{base_cfg.pretrained}' takes {unet.config.in_channels} input channels "
                                  f"but the data has {spec.in_channels} (pixels vs VAE latents?)")
        return unet
    return build_unet(base_cfg, spec.in_channels, spec.in_channels, spec.sample_size,
                      num_class_embeds=spec.num_class_embeds)


class BaseGenerator(nn.Module):
    """φ(z_t^k, t, cond) on single frames ``(B, C, H, W)``."""

    def __init__(self, unet: nn.Module, num_classes: int = 0):
        super().__init__()
        self.unet = unet
        self.num_classes = num_classes

    def forward(self, z_key: torch.Tensor, t: torch.Tensor, cond: Optional[Cond] = None) -> torch.Tensor:
        labels = label_ids(cond, self.num_classes, z_key.shape[0], z_key.device)
        return unet_forward(self.unet, z_key, t, labels, context=text_states(cond))
