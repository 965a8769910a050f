"""The data API behind :mod:`vfusion.data` (which re-exports it lazily): listings, indexes,
caches, datasets and loaders built from a ``data`` config. Imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import DataLoader, Dataset

from vfusion.data.errors import DatasetError
from vfusion.data.index import VideoIndex, build_index
from vfusion.data.registry import has_folds, listing_function
from vfusion.data.sources import Listing

__all__ = ["build_listing", "build_video_index", "ensure_cache", "build_dataset", "build_dataloader", "dataset_info",
           "default_num_workers"]


def build_listing(data_cfg, split: Optional[str] = None) -> Listing:
    """The videos of ``split`` (default ``data.split``) before any file is opened."""
    return listing_function(data_cfg.dataset)(data_cfg, split or data_cfg.split)


def build_video_index(data_cfg, split: Optional[str] = None, progress: bool = True) -> VideoIndex:
    """Frame counts of every video of the split (remembered under ``data.cache_dir``), short policy applied."""
    return build_index(build_listing(data_cfg, split), int(data_cfg.num_frames), int(data_cfg.frame_stride),
                       data_cfg.short_policy, strict=bool(data_cfg.strict), cache_dir=data_cfg.cache_dir,
                       progress=progress)


def _clip_dataset(data_cfg, index: VideoIndex, train: bool, seed: int):
    from vfusion.data.video_dataset import ClipDataset

    return ClipDataset(index, int(data_cfg.num_frames), int(data_cfg.frame_stride), int(data_cfg.resolution),
                       short_policy=data_cfg.short_policy, train=train, random_flip=bool(data_cfg.random_flip),
                       seed=seed, strict=bool(data_cfg.strict), class_conditional=bool(data_cfg.class_conditional))


def ensure_cache(data_cfg, split: Optional[str] = None, progress: bool = True, num_workers: Optional[int] = None,
                 device: Optional[str] = None) -> Path:
    """The cache folder of ``data.cache`` for ``split``, built (atomically) when absent or stale."""
    from vfusion.data.cache import build_cache, cache_key, cache_path, read_manifest

    split = split or data_cfg.split
    if data_cfg.cache not in ("clips", "latents"):
        raise DatasetError(f"data.cache is '{data_cfg.cache}'; set it to clips or latents to build a cache")
    if int(data_cfg.cache_clips_per_video) < 1:
        raise DatasetError("data.cache_clips_per_video must be >= 1")
    index = build_video_index(data_cfg, split, progress=progress)
    key = cache_key(data_cfg, split, data_cfg.cache, index.fingerprint())
    target = cache_path(data_cfg, key)
    manifest = read_manifest(target)
    if manifest is not None and manifest.get("key") == key:
        return target
    clips = _clip_dataset(data_cfg, index, train=False, seed=0)
    workers = default_num_workers(data_cfg) if num_workers is None else int(num_workers)
    return build_cache(data_cfg, split, clips, key, target, progress=progress, num_workers=workers, device=device)


def build_dataset(data_cfg, split: Optional[str] = None, train: bool = True, seed: int = 0) -> Dataset:
    """``(video, label)`` pairs of one split, decoded on the fly or read from the configured cache."""
    split = split or data_cfg.split
    if data_cfg.cache in ("clips", "latents"):
        from vfusion.data.cache import CachedDataset

        return CachedDataset(ensure_cache(data_cfg, split), train=train, random_flip=bool(data_cfg.random_flip),
                             seed=seed, class_conditional=bool(data_cfg.class_conditional))
    return _clip_dataset(data_cfg, build_video_index(data_cfg, split), train, seed)


def default_num_workers(data_cfg) -> int:
    n = int(data_cfg.num_workers)
    return min(4, os.cpu_count() or 1) if n < 0 else n


def _seed_worker(worker_id: int) -> None:
    import random

    import numpy as np

    s = torch.initial_seed() % 2**32  # distinct per worker and epoch, reproducible from the loader seed
    np.random.seed(s)
    random.seed(s)
    info = torch.utils.data.get_worker_info()       # the dataset's clip/flip sampler (TrainRandom) too
    sampler = getattr(info.dataset, "random", None) if info is not None else None
    if hasattr(sampler, "reseed"):
        sampler.reseed(torch.initial_seed())


def build_dataloader(data_cfg, split: Optional[str] = None, train: bool = True, seed: int = 0,
                     batch_size: Optional[int] = None, shuffle: Optional[bool] = None,
                     drop_last: Optional[bool] = None, batch_hint: str = "lower data.batch_size") -> DataLoader:
    """``batch_hint``: how a split smaller than one batch is fixed, naming the key that set the batch."""
    dataset = build_dataset(data_cfg, split, train=train, seed=seed)
    workers = default_num_workers(data_cfg)
    bs = int(batch_size or data_cfg.batch_size)
    if train and len(dataset) < bs:
        raise DatasetError(f"the {split or data_cfg.split} split has {len(dataset)} videos, fewer than one batch "
                           f"of {bs}; {batch_hint}")
    gen = torch.Generator().manual_seed(int(seed))
    return DataLoader(dataset, batch_size=bs, shuffle=train if shuffle is None else shuffle,
                      drop_last=train if drop_last is None else drop_last, num_workers=workers,
                      persistent_workers=workers > 0, worker_init_fn=_seed_worker, generator=gen,
                      pin_memory=torch.cuda.is_available())


def dataset_info(data_cfg, split: Optional[str] = None) -> dict:
    """Class names and counts of a split (lists the files; frame counts come from the index)."""
    index = build_video_index(data_cfg, split, progress=False)
    info = {"dataset": data_cfg.dataset, "root": str(data_cfg.root), "split": split or data_cfg.split,
            "fold": int(data_cfg.fold) if has_folds(data_cfg.dataset) else None,
            "description": index.listing.description,
            "num_classes": len(index.class_names), "class_names": list(index.class_names),
            "class_conditional": bool(data_cfg.class_conditional), "num_frames": int(data_cfg.num_frames),
            "frame_stride": int(data_cfg.frame_stride), "resolution": int(data_cfg.resolution),
            "short_policy": data_cfg.short_policy}
    info.update(index.counts())           # videos, listed, missing, unreadable, short, skipped_short, frames
    info["unreadable_files"] = list(index.unreadable)
    info["missing_files"] = list(index.listing.missing)
    return info
