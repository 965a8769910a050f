"""Zero-initialised temporal layers for networks that see frames folded into the batch.

Two kinds live here: :class:`TemporalMixer` (diffusers' temporal conv / attention, the
video-UNet baseline's layers) and :class:`TemporalConvMixer` (one small temporal conv at
the residual generator's bottleneck, its ``temporal_mixing`` ablation switch).

A 2D network processes ``(B*T, C, H, W)`` (frames folded by :func:`vfusion.layout.fold_frames`);
a :class:`TemporalMixer` placed after one of its spatial layers mixes information across
the T frames of each clip and returns the same layout. It is a residual layer whose last
projection starts at zero, so at initialisation it is exactly the identity and the
inflated network equals the image network applied per frame.

Both mixers are diffusers' own layers, not re-implementations:

- ``conv``: :class:`diffusers.models.resnet.TemporalConvLayer` (ModelScope / UNet3D
  "pseudo-3D" temporal convolution: four (3, 1, 1) Conv3d with GroupNorm + SiLU; diffusers
  already zero-initialises its last conv). Its kernel size is fixed at 3 by diffusers.
- ``attention``: :class:`diffusers.models.unets.unet_motion_model.AnimateDiffTransformer3D`
  (the AnimateDiff motion module that ``UNetMotionModel`` inserts: per-pixel self-attention
  along time with sinusoidal frame positions). diffusers leaves its output projection
  randomly initialised (AnimateDiff zero-initialises it); we zero it here.
"""

from __future__ import annotations

import torch
from diffusers.models.resnet import TemporalConvLayer
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from torch import nn

TEMPORAL_KINDS = ("conv", "attention", "both")


class TemporalMixer(nn.Module):
    """Temporal conv and/or temporal attention on ``(B*T, C, H, W)``; identity at init."""

    def __init__(self, channels: int, kind: str = "both", num_heads: int = 4, norm_groups: int = 32,
                 max_frames: int = 32):
        super().__init__()
        if kind not in TEMPORAL_KINDS:
            raise ValueError(f"temporal layer kind '{kind}'; expected one of {', '.join(TEMPORAL_KINDS)}")
        if channels % num_heads:
            raise ValueError(f"temporal attention: {channels} channels are not divisible by {num_heads} heads "
                             "(set model.video_unet.attention_heads to a divisor of every block's width)")
        if channels % norm_groups:
            raise ValueError(f"temporal layers: {channels} channels are not divisible by {norm_groups} norm groups")
        self.conv = TemporalConvLayer(channels, channels, norm_num_groups=norm_groups) if kind != "attention" else None
        self.attn = None
        if kind != "conv":
            self.attn = AnimateDiffTransformer3D(
                num_attention_heads=num_heads, attention_head_dim=channels // num_heads, in_channels=channels,
                norm_num_groups=norm_groups, positional_embeddings="sinusoidal",
                num_positional_embeddings=max_frames)
            nn.init.zeros_(self.attn.proj_out.weight)
            nn.init.zeros_(self.attn.proj_out.bias)

    def forward(self, h: torch.Tensor, num_frames: int) -> torch.Tensor:
        # (B*T, C, H, W) -> (B*T, C, H, W); both diffusers layers add their own residual
        if self.conv is not None:
            h = self.conv(h, num_frames=num_frames)
        if self.attn is not None:
            h = self.attn(h, num_frames=num_frames)
        return h

    def output_layers(self) -> list[nn.Module]:
        """The zero-initialised last projections (what keeps the mixer an identity at init)."""
        layers = []
        if self.conv is not None:
            layers.append(self.conv.conv4[-1])
        if self.attn is not None:
            layers.append(self.attn.proj_out)
        return layers


class TemporalConvMixer(nn.Module):
    """x + Conv1d_T(SiLU(GroupNorm(x))) over frames, output conv zero-initialised.

    Works on folded features ``(B*T, C, H, W)``; ``num_frames`` is set by the caller
    before each forward.
    """

    def __init__(self, channels: int, kernel_size: int = 3, groups: int = 8):
        super().__init__()
        self.norm = nn.GroupNorm(min(groups, channels), channels)
        self.conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.num_frames = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.num_frames
        bt, c, h, w = x.shape
        y = torch.nn.functional.silu(self.norm(x))
        y = y.reshape(bt // t, t, c, h, w).permute(0, 3, 4, 2, 1).reshape(-1, c, t)  # (B*H*W, C, T)
        y = self.conv(y).reshape(bt // t, h, w, c, t).permute(0, 4, 3, 1, 2).reshape(bt, c, h, w)
        return x + y
