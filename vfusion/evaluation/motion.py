"""How far the content of a clip moves: the mean optical-flow magnitude between consecutive frames.

Flicker and drift (``temporal.py``) measure how much the pixels change, which a still clip with noise and a clip
whose objects travel can score alike. Optical flow measures displacement: a pattern moved by k pixels a frame gives
about k, a still clip about 0, whatever its brightness does (the idea of VBench's "dynamic degree", RAFT flow
thresholded per video, as a continuous number). The estimator is OpenCV's Farnebäck dense flow
(``opencv-python-headless``; Farnebäck, "Two-Frame Motion Estimation Based on Polynomial Expansion", SCIA 2003): no
learned weights, milliseconds on the CPU at the evaluated clip sizes, deterministic, published and widely used;
RAFT would need weights and torchvision, which pulls a CUDA build of torch. Flow runs on BT.601 luma of the uint8
frames with the parameters of ``FARNEBACK`` (OpenCV's documented example values), at the evaluated resolution: the
unit is pixels per frame at that resolution.
"""

from __future__ import annotations

import numpy as np
import torch

# pyramid of 3 levels halving the size, 15-pixel averaging window, 3 iterations, degree-5 polynomial
# neighbourhood with sigma 1.1 (OpenCV's recommendation for poly_n = 5)
FARNEBACK = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5, "poly_sigma": 1.1,
             "flags": 0}
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


def luma_uint8(videos: torch.Tensor) -> np.ndarray:
    """``(B, 3, T, H, W)`` in [-1, 1] -> ``(B, T, H, W)`` uint8 luma (one channel passes through)."""
    v = ((videos.detach().float().clamp(-1, 1) + 1) * 127.5).cpu()
    if v.shape[1] == 3:
        v = sum(w * v[:, c] for c, w in enumerate(LUMA))
    else:
        v = v[:, 0]
    return v.round().clamp(0, 255).to(torch.uint8).numpy()


def flow_magnitude(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``(H, W)`` flow magnitude (pixels) from one uint8 grey frame to the next."""
    import cv2

    flow = cv2.calcOpticalFlowFarneback(first, second, None, **FARNEBACK)
    return np.hypot(flow[..., 0], flow[..., 1])


def clip_motion(videos: torch.Tensor) -> torch.Tensor:
    """(B,) mean flow magnitude over the consecutive frame pairs and pixels of each clip, pixels per frame."""
    if videos.dim() != 5 or videos.shape[2] < 2:
        raise ValueError(f"expected clips (B, C, T, H, W) with T >= 2, got shape {tuple(videos.shape)}")
    grey = luma_uint8(videos)
    out = [np.mean([flow_magnitude(clip[i], clip[i + 1]).mean() for i in range(len(clip) - 1)]) for clip in grey]
    return torch.tensor(out, dtype=torch.float64)


def protocol() -> dict:
    """What metrics.json records about the motion metric."""
    import cv2

    return {"estimator": "OpenCV calcOpticalFlowFarneback", "opencv": cv2.__version__, "parameters": dict(FARNEBACK),
            "input": "BT.601 luma of the uint8 frames at the evaluated resolution",
            "value": "mean over clips of the mean flow magnitude over consecutive frame pairs and pixels",
            "unit": "pixels per frame at the evaluated resolution",
            "ratio": "motion of the generated clips / motion of the real clips"}
