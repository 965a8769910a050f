"""Clip sampling and the spatial transform shared by every dataset.

Temporal sampling (Latte / StyleGAN-V practice): ``N`` frames with stride ``s`` span ``(N - 1) * s + 1`` source
frames from a uniformly drawn start (training) or a seeded, per-item deterministic one (evaluation). A shorter
video follows the short policy: ``skip`` leaves it out (counted); ``loop`` wraps around, frame
``(start + k * s) mod n``; ``lower_stride`` takes the largest stride ``s' < s`` that fits, and loops at stride 1
if even ``s' = 1`` does not fit (``n < N``).

Spatial transform: the center square of the short side is cropped, then resized (bilinear, antialiased) to
``resolution`` -- the same as a short-side resize followed by a center crop (UCF-101 and Sky Time-lapse practice).
Training may flip horizontally; clips leave as ``(C, T, H, W)`` float32 in [-1, 1]. Inference fits its
conditioning frames to the model with the same transform (or, ``stretch``, resizes the whole frame).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

SHORT_POLICIES = ("skip", "loop", "lower_stride")


def clip_span(num_frames: int, stride: int) -> int:
    """Source frames a clip of ``num_frames`` frames at ``stride`` covers."""
    return (num_frames - 1) * stride + 1


def is_short(length: int, num_frames: int, stride: int) -> bool:
    return length < clip_span(num_frames, stride)


def clip_indices(length: int, num_frames: int, stride: int, policy: str, u: float) -> Optional[np.ndarray]:
    """Frame indices of one clip, or ``None`` when the video is short and ``policy == 'skip'``.

    ``u`` in [0, 1) picks the start among all valid starts (uniformly when ``u`` is
    uniform); the same ``u`` always gives the same clip.
    """
    if policy not in SHORT_POLICIES:
        raise ValueError(f"short policy '{policy}' is not one of {', '.join(SHORT_POLICIES)}")
    if length < 1:
        raise ValueError(f"a video needs at least one frame, got length {length}")
    if not 0.0 <= u < 1.0:
        raise ValueError(f"u must lie in [0, 1), got {u}")
    steps = np.arange(num_frames, dtype=np.int64)
    if is_short(length, num_frames, stride):
        if policy == "skip":
            return None
        if policy == "lower_stride" and num_frames > 1 and length >= num_frames:
            stride = (length - 1) // (num_frames - 1)          # largest stride that fits, >= 1
        elif policy == "lower_stride" and num_frames == 1:
            stride = 1
        else:                                                   # loop (lower_stride that cannot fit: at stride 1)
            if policy == "lower_stride":
                stride = 1
            start = min(int(u * length), length - 1)
            return (start + steps * stride) % length
    num_starts = length - clip_span(num_frames, stride) + 1
    start = min(int(u * num_starts), num_starts - 1)
    return start + steps * stride


def cache_positions(clips_per_video: int) -> list[float]:
    """Evenly spread, deterministic ``u`` values of the clips a cache stores per video."""
    return [(k + 0.5) / clips_per_video for k in range(clips_per_video)]


def eval_position(seed: int, index: int) -> float:
    """The deterministic ``u`` of item ``index`` in evaluation (independent of worker and order)."""
    return float(np.random.default_rng([seed, index]).random())


SPATIAL_MODES = ("crop", "stretch")


def resize_frames(x: torch.Tensor, resolution: int, mode: str = "crop") -> torch.Tensor:
    """Frames ``(N, C, H, W)``, uint8 or float -> ``(N, C, resolution, resolution)`` of the same dtype.

    ``crop`` keeps the center square of the short side (the training transform), ``stretch`` the whole
    frame (its aspect is lost); then the bilinear, antialiased resize.
    """
    if mode not in SPATIAL_MODES:
        raise ValueError(f"resize mode '{mode}' is not one of {', '.join(SPATIAL_MODES)}")
    h, w = x.shape[-2:]
    if mode == "crop":
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        x = x[..., top:top + side, left:left + side]
    if tuple(x.shape[-2:]) != (resolution, resolution):
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    return x


def center_crop_resize(frames: np.ndarray | torch.Tensor, resolution: int, mode: str = "crop") -> torch.Tensor:
    """``(T, H, W, C)`` uint8 -> ``(T, resolution, resolution, C)`` uint8 by :func:`resize_frames`."""
    x = torch.as_tensor(frames)
    if x.dim() != 4 or x.dtype != torch.uint8:
        raise ValueError(f"expected (T, H, W, C) uint8 frames, got {tuple(x.shape)} {x.dtype}")
    x = x.permute(0, 3, 1, 2)                             # (T, C, H, W), channels-last in memory: fast uint8 path
    return resize_frames(x, resolution, mode).permute(0, 2, 3, 1).contiguous()


def resize_clips(clips: torch.Tensor, resolution: int, mode: str = "crop") -> torch.Tensor:
    """Clips ``(B, C, T, H, W)`` -> ``(B, C, T, resolution, resolution)``, every frame by :func:`resize_frames`."""
    b, c, t, h, w = clips.shape
    x = resize_frames(clips.transpose(1, 2).reshape(b * t, c, h, w), resolution, mode)
    return x.reshape(b, t, c, resolution, resolution).transpose(1, 2).contiguous()


def to_clip(frames: np.ndarray | torch.Tensor, flip: bool = False) -> torch.Tensor:
    """``(T, H, W, C)`` uint8 -> ``(C, T, H, W)`` float32 in [-1, 1], optionally flipped left-right."""
    x = torch.as_tensor(frames)
    if flip:
        x = x.flip(2)                                             # flip the uint8 frames: the cheaper copy
    x = x.permute(3, 0, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
    return x.div_(127.5).sub_(1.0)
