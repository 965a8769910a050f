"""Stage 1 as an ordinary registered model (``image_unet``): the base UNet on one-frame clips.

Clips of one frame ``(B, C, 1, H, W)`` go through the image UNet; stage 1 (``vfusion
pretrain-base``) thereby reuses the same LightningModule, objective and pipeline as the
video models. Its pipeline component ``base`` is a plain diffusers UNet folder, which is
what stage 2 loads as its base generator.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from vfusion.conditioning import Cond
from vfusion.models.base_generator import BaseGenerator, base_network
from vfusion.models.spec import ModelSpec


class ImageUNet(nn.Module):
    clip_frames = 1  # the runner trains it on single frames drawn from the data's clips

    def __init__(self, base: BaseGenerator):
        super().__init__()
        self.base = base

    @property
    def unet(self) -> nn.Module:
        return self.base.unet

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Optional[Cond] = None) -> torch.Tensor:
        if x_t.shape[2] != 1:
            raise ValueError(f"ImageUNet takes one-frame clips (B, C, 1, H, W), got {tuple(x_t.shape)}")
        return self.base(x_t[:, :, 0], t, cond).unsqueeze(2)

    @classmethod
    def build(cls, cfg, spec: ModelSpec) -> "ImageUNet":
        return cls(BaseGenerator(base_network(cfg.model.base, spec), spec.num_classes, spec.base))

    def pipeline_components(self) -> dict:
        return {"base": self.unet}

    @classmethod
    def from_pipeline_components(cls, components: dict, spec: ModelSpec) -> "ImageUNet":
        return cls(BaseGenerator(components["base"], spec.num_classes, spec.base))
