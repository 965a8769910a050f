"""Streaming feature statistics and the on-disk cache of real-data statistics.

:class:`FeatureStats` accumulates, in float64, the count, ``Σ f`` and ``Σ f fᵀ`` of detector features batch by
batch, so the mean and covariance the Fréchet distance needs (FVD, StyleGAN-V ``fvd2048_16f``) cost ``O(D²)``
memory whatever the number of clips N (D = 400 for I3D logits). The covariance is ``(Σ f fᵀ − N μ μᵀ) / (N − ddof)``;
StyleGAN-V's FVD uses ``ddof = 0`` (population covariance), our default. KVD needs the features themselves
(``keep_features=True``, one growing :class:`RowBuffer`): ``N × D`` float64, 6.5 MB for 2048 I3D clips, small next
to one batch of 224x224 videos; the caller keeps Inception Score class probabilities the same way.

Real-data statistics are cached per (protocol, dataset, root, fold, split, resolution, frames, stride, N, detector
sha256, ...): the key is stored inside the file and checked on load, and the file is written atomically (temporary
file + ``os.replace``), so a stale or half-written cache is never used.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from vfusion.utils.io import atomic_path


class RowBuffer:
    """Rows appended batch by batch into one contiguous float64 array (capacity doubles).

    Keeping each batch's small array instead fragments the heap between the large
    transient video tensors, and the process's peak RSS then grows ~10x faster than
    the data kept (measured in experiments/bench_evaluate.py).
    """

    def __init__(self, initial_rows: int = 256):
        self._data: np.ndarray | None = None
        self._initial = initial_rows
        self.num = 0

    def append(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        if self._data is None:
            self._data = np.empty((max(self._initial, x.shape[0]), x.shape[1]))
        elif x.shape[1] != self._data.shape[1]:
            raise ValueError(f"row size changed from {self._data.shape[1]} to {x.shape[1]}")
        if self.num + x.shape[0] > self._data.shape[0]:
            grown = np.empty((max(2 * self._data.shape[0], self.num + x.shape[0]), self._data.shape[1]))
            grown[:self.num] = self._data[:self.num]
            self._data = grown
        self._data[self.num:self.num + x.shape[0]] = x
        self.num += x.shape[0]

    def array(self) -> np.ndarray:
        """The rows so far, ``(num, dim)`` (a view)."""
        if self._data is None:
            raise ValueError("no rows were appended")
        return self._data[:self.num]


class FeatureStats:
    """Running float64 sums of features ``(B, D)``; memory independent of N."""

    def __init__(self, keep_features: bool = False):
        self.keep_features = keep_features
        self.num = 0
        self.sum: np.ndarray | None = None
        self.outer: np.ndarray | None = None
        self._rows = RowBuffer() if keep_features else None

    @property
    def dim(self) -> int | None:
        return None if self.sum is None else self.sum.shape[0]

    def update(self, feats: torch.Tensor | np.ndarray) -> None:
        if isinstance(feats, torch.Tensor):
            feats = feats.detach().to("cpu", torch.float64).numpy()
        x = np.asarray(feats, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be (batch, dim), got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("the detector returned NaN/inf features (check the input range: videos in [-1, 1])")
        if self.sum is None:
            self.sum = np.zeros(x.shape[1])
            self.outer = np.zeros((x.shape[1], x.shape[1]))
        elif x.shape[1] != self.dim:
            raise ValueError(f"feature size changed from {self.dim} to {x.shape[1]}")
        self.num += x.shape[0]
        self.sum += x.sum(0)
        self.outer += x.T @ x
        if self._rows is not None:
            self._rows.append(x)

    def _check(self, minimum: int = 1) -> None:
        if self.num < minimum:
            raise ValueError(f"need at least {minimum} feature vectors, have {self.num}")

    @property
    def mean(self) -> np.ndarray:
        self._check()
        return self.sum / self.num

    def cov(self, ddof: int = 0) -> np.ndarray:
        self._check(ddof + 1)
        mu = self.mean
        return (self.outer - self.num * np.outer(mu, mu)) / (self.num - ddof)

    def features(self) -> np.ndarray:
        if not self.keep_features:
            raise RuntimeError("this FeatureStats was created with keep_features=False; the features are not kept")
        self._check()
        return self._rows.array()

    # -- (de)serialisation for the cache -------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        self._check()
        out = {"num": np.asarray(self.num), "sum": self.sum, "outer": self.outer}
        if self.keep_features:
            out["features"] = self.features()
        return out

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray]) -> "FeatureStats":
        stats = cls(keep_features="features" in state)
        stats.num = int(state["num"])
        stats.sum = np.asarray(state["sum"], np.float64)
        stats.outer = np.asarray(state["outer"], np.float64)
        if stats.keep_features:
            stats._rows.append(np.asarray(state["features"], np.float64))
        return stats


# -- real-statistics cache ----------------------------------------------------------------

def cache_key_digest(key: Mapping[str, Any]) -> str:
    blob = json.dumps(dict(key), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_file(cache_dir: str | Path, key: Mapping[str, Any]) -> Path:
    """A readable file name (dataset, split, size, frames, N, detector) plus a key hash."""
    parts = [key.get("dataset"), key.get("split"), f"{key.get('resolution')}px", f"{key.get('num_frames')}f",
             f"s{key.get('frame_stride')}", f"n{key.get('num_videos')}", key.get("detector")]
    if key.get("protocol") not in (None, "vfusion"):  # the preset's name in the file name too
        parts.insert(0, key["protocol"])
    name = "_".join(re.sub(r"[^A-Za-z0-9._-]+", "-", str(p)) for p in parts)
    return Path(cache_dir) / f"{name}_{cache_key_digest(key)[:16]}.npz"


def save_cached(path: str | Path, arrays: Mapping[str, np.ndarray], key: Mapping[str, Any]) -> Path:
    """Write ``arrays`` and the key they were computed for, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, __key__=np.asarray(json.dumps(dict(key), sort_keys=True, default=str)),
                     **{k: np.asarray(v) for k, v in arrays.items()})
    return path


def load_cached(path: str | Path, key: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is missing, unreadable or for another key."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = json.loads(str(data["__key__"]))
            if stored != json.loads(json.dumps(dict(key), sort_keys=True, default=str)):
                return None
            return {k: data[k] for k in data.files if k != "__key__"}
    except (OSError, ValueError, KeyError):
        return None
