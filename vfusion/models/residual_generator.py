"""Residual generator ψ (VideoFusion, method.md step 3).

A small diffusers 2D UNet applied to every non-key frame folded into the batch,
conditioned on the timestep AND the frame index (it must know which frame it is
denoising) and, for class-conditional data, on the class:

    r̂^i = ψ(z'^i_t, t, i [, class])

Frame index and class enter through the UNet's "identity" class embedding: their
learned embeddings are summed and added to the UNet's time embedding.

Optional temporal mixing (``temporal_mixing: true``): a zero-initialised temporal
convolution over the frame axis at the UNet's bottleneck (a forward hook on its
mid block), so at initialisation ψ is exactly per-frame and the switch can be
ablated cleanly. Off by default (the paper summary leaves it open).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from vfusion.layout import fold_frames, unfold_frames
from vfusion.models.unet2d import build_unet, time_embed_dim, unet_forward


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


class ResidualGenerator(nn.Module):
    def __init__(self, unet: nn.Module, num_frames: int, num_classes: int = 0, frame_embed_dim: int = 64,
                 temporal_mixing: bool = False):
        super().__init__()
        self.unet = unet
        self.num_frames = num_frames
        self.num_classes = num_classes
        emb = time_embed_dim(unet)
        self.frame_embed = nn.Sequential(nn.Embedding(num_frames, frame_embed_dim), nn.SiLU(),
                                         nn.Linear(frame_embed_dim, emb))
        self.class_embed = nn.Embedding(num_classes + 1, emb) if num_classes > 0 else None
        self.mixer: Optional[TemporalConvMixer] = None
        if temporal_mixing:
            if getattr(unet, "mid_block", None) is None:
                raise ValueError("temporal_mixing needs a UNet with a mid block")
            self.mixer = TemporalConvMixer(unet.config.block_out_channels[-1])
            unet.mid_block.register_forward_hook(lambda _m, _inp, out: self.mixer(out))

    def forward(self, z: torch.Tensor, t: torch.Tensor, frame_index: torch.Tensor,
                class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``z``: (B, C, T', H, W) frames with indices ``frame_index`` (T',) -> r̂ of the same shape."""
        b, _, tp, _, _ = z.shape
        idx = frame_index.to(z.device).repeat(b)                      # (B*T',) frame fastest
        cond = self.frame_embed(idx)                                  # (B*T', E)
        if self.class_embed is not None:
            if class_labels is None:  # the null ("no label") entry
                class_labels = torch.full((b,), self.num_classes, dtype=torch.long, device=z.device)
            cond = cond + self.class_embed(class_labels).repeat_interleave(tp, dim=0)
        if self.mixer is not None:
            self.mixer.num_frames = tp
        out = unet_forward(self.unet, fold_frames(z), t.repeat_interleave(tp), cond.to(z.dtype))
        return unfold_frames(out, tp)


def residual_generator_from_config(res_cfg, spec) -> ResidualGenerator:
    unet = build_unet(res_cfg, spec.in_channels, spec.in_channels, spec.sample_size, class_embed_type="identity")
    return ResidualGenerator(unet, spec.num_frames, spec.num_classes, res_cfg.frame_embed_dim, res_cfg.temporal_mixing)
