"""Real clips of a configured dataset as a :class:`~vfusion.evaluation.core.ClipSource`,
with their statistics cached on disk.

Which clips: the protocol preset's (``protocols.py``): under ``vfusion`` a seeded subset of
the split (``clip_sources.dataset_subsets``), under ``stylegan_v`` the first N videos in
sorted order at seeded offsets. Either way the clips are fixed, so their I3D statistics,
the real side of the per-frame FID and the per-clip statistics (``clip_stats.py``) can be cached
(``features.py``), keyed by everything that selects or changes the clips (the protocol,
dataset, root, split, frames, stride, resolution, N, the size of the split or the
fingerprint of the selected videos, the detector's sha256, ...): the two protocols never
share a file. A detector whose sha256 is unknown is never cached (the per-clip statistics
need no detector). Real clips given as a folder are not cached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from vfusion.config import to_dict
from vfusion.data import default_num_workers
from vfusion.evaluation.clip_sources import SUBSET_SEED, dataset_batches, dataset_subsets
from vfusion.evaluation.clip_stats import CLIP_STATISTICS
from vfusion.evaluation.core import CACHED, ClipSource, read_real
from vfusion.evaluation.detectors import Detectors
from vfusion.evaluation.features import FeatureStats, cache_file, load_cached, save_cached
from vfusion.evaluation.fid import FrameFID
from vfusion.evaluation.protocols import (DEFAULT_PROTOCOL, OFFSET_SEED, check_protocol, min_length, selection_info,
                                          stylegan_v_selection)

CACHE_VERSION = 2  # 2: keyed by the protocol; temporal statistics
# data keys that do not change which real clips are evaluated (left out of the cache key)
_NOT_IN_KEY = ("batch_size", "num_workers", "strict", "cache", "cache_dir", "split", "eval_split",
               "class_conditional", "labels_from_subfolders", "random_flip")


def _real_info(data_cfg, split: str, protocol: str = DEFAULT_PROTOCOL) -> dict:
    d = {k: v for k, v in to_dict(data_cfg).items() if k not in ("batch_size", "num_workers")}
    d["split"] = split
    d["root"] = str(Path(str(d.get("root", ""))).resolve())
    d["protocol"] = protocol
    if protocol == "stylegan_v":
        d["offset_seed"] = OFFSET_SEED
        d["min_frames"] = min_length(d["num_frames"], d["frame_stride"])
        d.pop("short_policy", None)  # not used: short videos are discarded
        d.pop("cache", None)         # not used: the clips are decoded at the protocol's offsets
    else:
        d["subset_seed"] = SUBSET_SEED
    return d


def _cache_keys(data_cfg, split: str, num_videos: int, det: Detectors, protocol: str = DEFAULT_PROTOCOL
                ) -> dict[str, dict]:
    base = {k: v for k, v in to_dict(data_cfg).items() if k not in _NOT_IN_KEY}
    base.update(root=str(Path(str(base.get("root", ""))).resolve()), split=split, num_videos=num_videos,
                protocol=protocol, quantized=True, version=CACHE_VERSION)
    if protocol == "stylegan_v":
        base.update(offset_seed=OFFSET_SEED, min_frames=min_length(base["num_frames"], base["frame_stride"]))
    else:
        base["subset_seed"] = SUBSET_SEED
    return {"i3d_k400": dict(base, detector="i3d_k400", sha256=det.sha256("i3d_k400")),
            "inception_v3": dict(base, detector="inception_v3", sha256=det.sha256("inception_v3")),
            **{name: dict(base, detector=name, statistics=stat.version) for name, stat in CLIP_STATISTICS.items()}}


def _cacheable(name: str, key: dict) -> bool:
    return name in CLIP_STATISTICS or bool(key["sha256"])


class DatasetStatsCache:
    """The on-disk statistics of ``num_videos`` real clips of a dataset split (``core.StatsCache``).

    ``selected``: what else decides which clips are read, added to every key (e.g. the size of
    the split, or the fingerprint of the selected videos).
    """

    def __init__(self, data_cfg, split: str, num_videos: int, selected: dict, cache_dir: Optional[str | Path],
                 protocol: str = DEFAULT_PROTOCOL):
        self.data_cfg, self.split, self.num_videos = data_cfg, split, num_videos
        self.selected, self.cache_dir, self.protocol = dict(selected), cache_dir, protocol

    def _keys(self, det: Detectors) -> dict[str, dict]:
        keys = _cache_keys(self.data_cfg, self.split, self.num_videos, det, self.protocol)
        for key in keys.values():  # a dataset that gained or lost videos selects other clips
            key.update(self.selected)
        return keys

    def load(self, det: Detectors, needs) -> dict[str, dict]:
        if self.cache_dir is None:
            return {}
        keys, out = self._keys(det), {}
        for name in needs:
            if _cacheable(name, keys[name]):
                state = load_cached(cache_file(self.cache_dir, keys[name]), keys[name])
                if state is not None:
                    out[name] = state
        return out

    def save(self, det: Detectors, states: dict[str, dict]) -> None:
        if self.cache_dir is None:
            return
        keys = self._keys(det)
        for name, state in states.items():
            if name in CACHED and _cacheable(name, keys[name]):
                save_cached(cache_file(self.cache_dir, keys[name]), state, keys[name])


def dataset_source(data_cfg, split: str, num_videos: int, batch_size: int, cache_dir: Optional[str | Path],
                   protocol: str = DEFAULT_PROTOCOL, subset: Optional[tuple[Any, list[int]]] = None,
                   desc: Optional[str] = None, **info: Any) -> ClipSource:
    """``num_videos`` real clips of the split (fewer when it is smaller), statistics cached in ``cache_dir``.

    ``protocol``: which clips (``protocols.py``). ``subset``: ``(dataset, indices)`` already drawn by
    :func:`dataset_subsets` (its first ``num_videos``), instead of building the dataset again (``vfusion``
    protocol). ``desc``: the progress bar's label. ``info``: extra entries of ``protocol.real`` (after
    ``source``), e.g. ``config=PATH``.
    """
    protocol = check_protocol(protocol)
    workers = default_num_workers(data_cfg)
    if protocol == "stylegan_v":
        sel = stylegan_v_selection(data_cfg, split, num_videos)
        dataset, indices = sel.dataset, list(range(len(sel.dataset)))
        selected = {"num_available": sel.num_kept, "selection": sel.fingerprint}
        extra = selection_info(sel, int(data_cfg.num_frames), int(data_cfg.frame_stride))
        num_available = sel.num_kept
    else:
        if subset is None:
            dataset, (indices,) = dataset_subsets(data_cfg, split, [num_videos])
        else:
            dataset, indices = subset
        selected, extra, num_available = {"num_available": len(dataset)}, {}, len(dataset)
    cache = DatasetStatsCache(data_cfg, split, num_videos, selected, cache_dir, protocol)
    description = dict(_real_info(data_cfg, split, protocol), source="dataset", **info, num_available=num_available,
                       **extra, stats_cache=str(cache_dir))
    return ClipSource(dataset_batches(dataset, indices, batch_size, workers, with_labels=True), description,
                      desc=desc or f"real clips ({split})", num=len(indices), cache=cache,
                      class_names=getattr(dataset, "class_names", None))


def real_dataset_stats(data_cfg, split: str, num_videos: int, det: Detectors, need_i3d: bool,
                       fid: Optional[FrameFID], cache_dir: Optional[str | Path], batch_size: int,
                       progress: bool = True, protocol: str = DEFAULT_PROTOCOL
                       ) -> tuple[Optional[FeatureStats], dict]:
    """I3D stats of the real clips (and the real side of ``fid``), from the cache when possible.

    The real side of :func:`~vfusion.evaluation.core.evaluate` on its own (kept for callers
    that only want the real statistics).
    """
    src = dataset_source(data_cfg, split, num_videos, batch_size, cache_dir, protocol)
    metrics = (["fvd"] if need_i3d else []) + (["fid"] if fid is not None else [])
    real = read_real(src, metrics, det, fid, progress)
    report: dict[str, Any] = {"num_real": real.num, "num_available": src.info["num_available"],
                              "cache_hit": real.cache_hit}
    if real.clip_shape is not None:  # the clips were read
        report["clip_shape"] = list(real.clip_shape)
    return real.i3d, report
