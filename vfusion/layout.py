"""The one tensor layout: ``(B, C, T, H, W)`` in [-1, 1], and the fold helpers.

2D networks see frames folded into the batch: ``(B, C, T, H, W) -> (B*T, C, H, W)``
with the frame index varying fastest, so ``unfold_frames`` inverts it exactly.
"""

from __future__ import annotations

import torch


def fold_frames(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, H, W) -> (B*T, C, H, W)``."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def unfold_frames(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``(B*T, C, H, W) -> (B, C, T, H, W)``."""
    bt, c, h, w = x.shape
    if bt % num_frames:
        raise ValueError(f"batch {bt} is not a multiple of num_frames={num_frames}")
    return x.reshape(bt // num_frames, num_frames, c, h, w).permute(0, 2, 1, 3, 4)


def repeat_per_frame(v: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Per-clip values ``(B, ...)`` -> per-frame ``(B*T, ...)`` matching ``fold_frames``."""
    return v.repeat_interleave(num_frames, dim=0)


def keyframe_index(num_frames: int) -> int:
    """The keyframe is the middle frame, ``T // 2`` (0-based)."""
    return num_frames // 2
