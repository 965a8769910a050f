"""The base UNet on single frames in the video interface (stage-1 image pretraining).

Clips of one frame ``(B, C, 1, H, W)`` go through the image UNet; this lets stage 1
(``vfusion pretrain-base``) reuse the same LightningModule, noise process and
sampler as the video models. Its ``unet`` is what gets saved with ``save_pretrained``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from vfusion.models.base_generator import BaseGenerator, base_unet_from_config
from vfusion.models.spec import ModelSpec


class ImageUNet(nn.Module):
    def __init__(self, base: BaseGenerator):
        super().__init__()
        self.base = base

    @property
    def unet(self) -> nn.Module:
        return self.base.unet

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        if x_t.shape[2] != 1:
            raise ValueError(f"ImageUNet takes one-frame clips (B, C, 1, H, W), got {tuple(x_t.shape)}")
        return self.base(x_t[:, :, 0], t, class_labels).unsqueeze(2)


def build_image_unet(cfg, spec: ModelSpec) -> ImageUNet:
    return ImageUNet(BaseGenerator(base_unet_from_config(cfg.model.base, spec), spec.num_classes))
