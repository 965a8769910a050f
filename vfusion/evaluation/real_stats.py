"""Real clips of a configured dataset as a :class:`~vfusion.evaluation.core.ClipSource`,
with their statistics cached on disk.

The clips are a seeded subset of the split (``clip_sources.dataset_subsets``), so their
I3D statistics and the real side of the per-frame FID can be cached (``features.py``),
keyed by everything that selects or changes the clips (dataset, root, split, frames,
stride, resolution, N, the size of the split, the detector's sha256, ...). A detector
whose sha256 is unknown is never cached. Real clips given as a folder are not cached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from vfusion.data import default_num_workers
from vfusion.evaluation.clip_sources import SUBSET_SEED, dataset_batches, dataset_subsets
from vfusion.evaluation.core import ClipSource, read_real
from vfusion.evaluation.detectors import Detectors
from vfusion.evaluation.features import FeatureStats, cache_file, load_cached, save_cached
from vfusion.evaluation.fid import FrameFID

CACHE_VERSION = 1
# data keys that do not change which real clips are evaluated (left out of the cache key)
_NOT_IN_KEY = ("batch_size", "num_workers", "strict", "cache", "cache_dir", "split", "eval_split",
               "class_conditional", "labels_from_subfolders", "random_flip")


def _to_dict(cfg) -> dict:
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def _real_info(data_cfg, split: str) -> dict:
    d = {k: v for k, v in _to_dict(data_cfg).items() if k not in ("batch_size", "num_workers")}
    d["split"] = split
    d["root"] = str(Path(str(d.get("root", ""))).resolve())
    d["subset_seed"] = SUBSET_SEED
    return d


def _cache_keys(data_cfg, split: str, num_videos: int, det: Detectors) -> dict[str, dict]:
    base = {k: v for k, v in _to_dict(data_cfg).items() if k not in _NOT_IN_KEY}
    base.update(root=str(Path(str(base.get("root", ""))).resolve()), split=split, num_videos=num_videos,
                subset_seed=SUBSET_SEED, quantized=True, version=CACHE_VERSION)
    return {"i3d_k400": dict(base, detector="i3d_k400", sha256=det.sha256("i3d_k400")),
            "inception_v3": dict(base, detector="inception_v3", sha256=det.sha256("inception_v3"))}


class DatasetStatsCache:
    """The on-disk statistics of ``num_videos`` real clips of a dataset split (``core.StatsCache``)."""

    def __init__(self, data_cfg, split: str, num_videos: int, num_available: int,
                 cache_dir: Optional[str | Path]):
        self.data_cfg, self.split, self.num_videos = data_cfg, split, num_videos
        self.num_available, self.cache_dir = num_available, cache_dir

    def _keys(self, det: Detectors) -> dict[str, dict]:
        keys = _cache_keys(self.data_cfg, self.split, self.num_videos, det)
        for key in keys.values():  # a dataset that gained or lost videos selects other clips
            key["num_available"] = self.num_available
        return keys

    def load(self, det: Detectors, need_i3d: bool, need_fid: bool) -> tuple[Optional[FeatureStats], Optional[dict]]:
        i3d_stats, fid_state = None, None
        if self.cache_dir is None:
            return i3d_stats, fid_state
        keys = self._keys(det)
        if need_i3d and keys["i3d_k400"]["sha256"]:
            state = load_cached(cache_file(self.cache_dir, keys["i3d_k400"]), keys["i3d_k400"])
            i3d_stats = FeatureStats.from_state(state) if state is not None else None
        if need_fid and keys["inception_v3"]["sha256"]:
            fid_state = load_cached(cache_file(self.cache_dir, keys["inception_v3"]), keys["inception_v3"])
        return i3d_stats, fid_state

    def save(self, det: Detectors, i3d: Optional[FeatureStats], fid_state: Optional[dict]) -> None:
        if self.cache_dir is None:
            return
        keys = self._keys(det)
        if i3d is not None and keys["i3d_k400"]["sha256"]:
            save_cached(cache_file(self.cache_dir, keys["i3d_k400"]), i3d.state(), keys["i3d_k400"])
        if fid_state is not None and keys["inception_v3"]["sha256"]:
            save_cached(cache_file(self.cache_dir, keys["inception_v3"]), fid_state, keys["inception_v3"])


def dataset_source(data_cfg, split: str, num_videos: int, batch_size: int, cache_dir: Optional[str | Path],
                   **info: Any) -> ClipSource:
    """``num_videos`` real clips of the split (fewer when it is smaller), statistics cached in ``cache_dir``.

    ``info``: extra entries of ``protocol.real`` (after ``source``), e.g. ``config=PATH``.
    """
    dataset, (indices,) = dataset_subsets(data_cfg, split, [num_videos])
    cache = DatasetStatsCache(data_cfg, split, num_videos, len(dataset), cache_dir)
    description = dict(_real_info(data_cfg, split), source="dataset", **info, num_available=len(dataset),
                       stats_cache=str(cache_dir))
    return ClipSource(dataset_batches(dataset, indices, batch_size, default_num_workers(data_cfg)), description,
                      desc=f"real clips ({split})", num=len(indices), cache=cache)


def real_dataset_stats(data_cfg, split: str, num_videos: int, det: Detectors, need_i3d: bool,
                       fid: Optional[FrameFID], cache_dir: Optional[str | Path], batch_size: int,
                       progress: bool = True) -> tuple[Optional[FeatureStats], dict]:
    """I3D stats of the real clips (and the real side of ``fid``), from the cache when possible.

    The real side of :func:`~vfusion.evaluation.core.evaluate` on its own (kept for callers
    that only want the real statistics).
    """
    src = dataset_source(data_cfg, split, num_videos, batch_size, cache_dir)
    metrics = (["fvd"] if need_i3d else []) + (["fid"] if fid is not None else [])
    real = read_real(src, metrics, det, fid, progress)
    report: dict[str, Any] = {"num_real": real.num, "num_available": src.info["num_available"],
                              "cache_hit": real.cache_hit}
    if real.clip_shape is not None:  # the clips were read
        report["clip_shape"] = list(real.clip_shape)
    return real.i3d, report
