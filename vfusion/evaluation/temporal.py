"""Pixel statistics of how much a clip changes over time, for clips ``(B, C, T, H, W)`` in [-1, 1].

FVD on a few dozen small clips hardly sees flicker; these two numbers do, and they are what noise sharing acts on
most directly. Compare them with the same statistics of real clips: lower is not better in itself (a still image
scores 0), closer to real is.

* ``frame_change``: mean absolute difference between consecutive frames;
* ``keyframe_drift``: mean absolute difference between every other frame and the middle (key) frame, i.e. how far
  the clip wanders from the frame the base generator sees.

Both are in grey levels (0..255 scale) per pixel and channel, one value per clip. ``vfusion evaluate --metrics
flicker,drift`` reports their means over the generated clips next to those over the real clips (``core.py``).
"""

from __future__ import annotations

import torch

from vfusion.layout import keyframe_index

GREY_LEVELS_PER_UNIT = 127.5  # [-1, 1] -> 0..255


def _check(videos: torch.Tensor) -> torch.Tensor:
    if videos.dim() != 5 or videos.shape[2] < 2:
        raise ValueError(f"expected clips (B, C, T, H, W) with T >= 2, got shape {tuple(videos.shape)}")
    return videos.float()


def frame_change(videos: torch.Tensor) -> torch.Tensor:
    """(B,) mean |x_{t+1} - x_t| over frames, pixels and channels, in grey levels."""
    v = _check(videos)
    return (v[:, :, 1:] - v[:, :, :-1]).abs().mean(dim=(1, 2, 3, 4)) * GREY_LEVELS_PER_UNIT


def keyframe_drift(videos: torch.Tensor) -> torch.Tensor:
    """(B,) mean |x_t - x_key| over the non-key frames, pixels and channels, in grey levels."""
    v = _check(videos)
    k = keyframe_index(v.shape[2])
    others = torch.cat([v[:, :, :k], v[:, :, k + 1:]], dim=2)
    return (others - v[:, :, k:k + 1]).abs().mean(dim=(1, 2, 3, 4)) * GREY_LEVELS_PER_UNIT


def clip_statistics(videos: torch.Tensor) -> torch.Tensor:
    """(B, 2): ``frame_change`` and ``keyframe_drift`` of each clip (what evaluation accumulates)."""
    return torch.stack([frame_change(videos), keyframe_drift(videos)], dim=1)
