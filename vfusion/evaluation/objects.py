"""Do the embedded dataset's objects move, and smoothly? Colour tracking of its two coloured objects.

The red ball of ``BouncingBall`` and the yellow bob of ``SwingingPendulum`` have colours of their own: a colour mask
finds the object in each frame and its centroid gives its place. Per clip of those classes, ``object_travel`` is how
far the object gets (the largest distance between two of its places), ``object_jump`` the largest move between two
consecutive frames where it is seen, ``object_seen`` the share of frames where it is visible (mask area >=
``MIN_AREA`` pixels). A clip that moves as the real ones do has travel near the real value and jumps not far above
the real ones; a still object has travel near 0; an object that fades out has ``object_seen`` below 1. Clips of
other classes, and values a clip cannot have (no frame, or no two consecutive frames, with the object seen), are
NaN: the metrics are means over the clips that have them. Distances are pixels at the evaluated resolution.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch

MIN_AREA = 4  # pixels (32x32 frames: the ball covers about 55, the bob about 25)
COLUMNS = ("object_travel", "object_jump", "object_seen")


def red_ball(rgb: np.ndarray) -> np.ndarray:
    """Mask of saturated red (the ball is about (0.85, 0.15, 0.15) on a beige texture)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (r > 0.5) & (r - g > 0.3) & (r - b > 0.3)


def yellow_bob(rgb: np.ndarray) -> np.ndarray:
    """Mask of saturated yellow (the bob is about (0.95, 0.80, 0.20) on a blue texture)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (r > 0.55) & (g > 0.45) & (np.minimum(r, g) - b > 0.3)


TRACKED: dict[str, Callable[[np.ndarray], np.ndarray]] = {"BouncingBall": red_ball, "SwingingPendulum": yellow_bob}


def track(clip: np.ndarray, mask_fn) -> dict:
    """``clip``: (T, H, W, 3) in [0, 1] -> ``seen``, ``travel``, ``jump`` (and ``step``, the mean move between
    consecutive seen frames; ``area_cv``, the mask area's std / mean) for one clip; a value it cannot have
    is missing."""
    masks = mask_fn(clip)                                               # (T, H, W)
    areas = masks.reshape(len(clip), -1).sum(1)
    seen = areas >= MIN_AREA
    ys, xs = np.mgrid[0:clip.shape[1], 0:clip.shape[2]]
    cents = np.array([[(xs * m).sum() / max(m.sum(), 1), (ys * m).sum() / max(m.sum(), 1)] for m in masks])
    out = {"seen": float(seen.mean())}
    if seen.any():
        a = areas[seen].astype(float)
        out["area_cv"] = float(a.std() / a.mean())
        c = cents[seen]
        out["travel"] = float(np.max(np.linalg.norm(c[:, None] - c[None], axis=-1)))
    both = seen[1:] & seen[:-1]
    if both.any():
        steps = np.linalg.norm(cents[1:] - cents[:-1], axis=1)[both]
        out["step"], out["jump"] = float(steps.mean()), float(steps.max())
    return out


def to_rgb01(videos: torch.Tensor) -> np.ndarray:
    """``(B, 3, T, H, W)`` in [-1, 1] -> ``(B, T, H, W, 3)`` in [0, 1]."""
    return ((videos.detach().float().cpu().permute(0, 2, 3, 4, 1) + 1) / 2).clamp(0, 1).numpy()


def clip_objects(videos: torch.Tensor, labels: Optional[Sequence[int]], class_names: Sequence[str]) -> np.ndarray:
    """``(B, 3)``: travel, jump and seen of each clip (``COLUMNS``), NaN for a clip of an untracked class."""
    out = np.full((videos.shape[0], len(COLUMNS)), np.nan)
    if labels is None:
        return out
    clips = None
    for i, label in enumerate(int(v) for v in labels):
        name = class_names[label] if 0 <= label < len(class_names) else None
        if name in TRACKED:
            clips = to_rgb01(videos) if clips is None else clips
            t = track(clips[i], TRACKED[name])
            out[i] = [t.get("travel", np.nan), t.get("jump", np.nan), t["seen"]]
    return out
