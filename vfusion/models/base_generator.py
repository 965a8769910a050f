"""Base generator φ (VideoFusion, method.md step 1): an image diffusion UNet.

It runs once per clip on the noisy keyframe z_t^k and predicts the shared base
noise b̂ = φ(z_t^k, t [, class]). Because λ^k = 1, z_t^k is an ordinary noisy
image, so any pretrained diffusers image UNet can serve, loaded with
``from_pretrained(local_dir)``; stage 1 (``vfusion pretrain-base``) writes such a
directory when no suitable checkpoint exists.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from vfusion.models.spec import ModelSpec
from vfusion.models.unet2d import build_unet, load_unet, unet_forward


def base_unet_from_config(base_cfg, spec: ModelSpec) -> nn.Module:
    """The base UNet: loaded from ``base_cfg.pretrained`` when set, else built fresh."""
    if base_cfg.pretrained:
        unet = load_unet(base_cfg.pretrained, base_cfg.subfolder, num_class_embeds=spec.num_class_embeds)
        if unet.config.in_channels != spec.in_channels:
            from vfusion.models.unet2d import CheckpointError

            raise CheckpointError(f"base UNet '{base_cfg.pretrained}' takes {unet.config.in_channels} input channels "
                                  f"but the data has {spec.in_channels} (pixels vs VAE latents?)")
        return unet
    return build_unet(base_cfg, spec.in_channels, spec.in_channels, spec.sample_size,
                      num_class_embeds=spec.num_class_embeds)


class BaseGenerator(nn.Module):
    """b̂ = φ(z_t^k, t, class) on single frames ``(B, C, H, W)``."""

    def __init__(self, unet: nn.Module, num_classes: int = 0):
        super().__init__()
        self.unet = unet
        self.num_classes = num_classes

    def forward(self, z_key: torch.Tensor, t: torch.Tensor, class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        labels = None
        if self.num_classes > 0:  # no labels given: the null ("no label") entry
            labels = class_labels if class_labels is not None else torch.full_like(t, self.num_classes)
        return unet_forward(self.unet, z_key, t, labels)
