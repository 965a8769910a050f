"""Config-keyed dataset caches in memory-mapped shards: decoded uint8 clips or VAE latents.

``data.cache=clips`` stores ``data.cache_clips_per_video`` clips of every usable video of a split (evenly spread
starts, :func:`vfusion.data.clips.cache_positions`), cropped and resized: ``(K, T, R, R, 3)`` uint8.
``data.cache=latents`` stores the same clips encoded by the VAE at ``data.vae_path``, ``(K, F, c, T, h, w)``
float32, where ``F = 2`` adds the flipped clip when ``data.random_flip`` is on (a flip of the video is not a flip
of its latents). Training picks one of the K clips (and flip) at random per access, evaluation a seeded one, never
flipped. A cache is ``<data.cache_dir>/<kind>-<dataset>-<split>-<hash>/``: ``shard_XXXXX.npy`` files
(``numpy.load(mmap_mode='r')``) and a ``manifest.json`` holding the key. The hash covers every setting that
changes the stored arrays (:func:`cache_key`) and a fingerprint of the videos (names, labels, lengths, sizes,
mtimes), so a changed config or dataset selects a different cache. The folder is written under a temporary name
and renamed into place, so a cache is either complete or absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vfusion.data.clips import cache_positions, eval_position, to_clip
from vfusion.data.errors import DatasetError
from vfusion.data.sources import UnreadableVideo
from vfusion.data.video_dataset import ClipDataset, TrainRandom

CACHE_VERSION = 1
SHARD_BYTES = 1 << 30


# --- keys ------------------------------------------------------------------------------
def _vae_fingerprint(vae_path: str) -> str:
    from vfusion.data.latents import vae_dir

    path, sub = vae_dir(vae_path)
    folder = path / sub if sub else path
    h = hashlib.sha256((folder / "config.json").read_bytes())
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.name != "config.json":
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def cache_key(data_cfg: Any, split: str, kind: str, fingerprint: str) -> dict:
    """Everything the stored arrays depend on: dataset, root, fold, split, frames, stride, resolution, short
    policy, clips per video and the videos' fingerprint; for latents also the VAE's config and weights files, its
    scaling factor and the flip."""
    key = {
        "version": CACHE_VERSION, "kind": kind, "dataset": data_cfg.dataset,
        "root": str(Path(data_cfg.root).expanduser().resolve()),
        "splits_dir": str(Path(data_cfg.splits_dir).resolve()) if data_cfg.splits_dir else None,
        "fold": int(data_cfg.fold), "split": split, "num_frames": int(data_cfg.num_frames),
        "frame_stride": int(data_cfg.frame_stride), "resolution": int(data_cfg.resolution),
        "short_policy": data_cfg.short_policy, "labels_from_subfolders": bool(data_cfg.labels_from_subfolders),
        "clips_per_video": int(data_cfg.cache_clips_per_video), "videos": fingerprint,
    }
    if kind == "latents":
        key.update(vae=str(Path(data_cfg.vae_path).expanduser().resolve()), vae_files=_vae_fingerprint(data_cfg.vae_path),
                   vae_scaling_factor=data_cfg.vae_scaling_factor, flipped=bool(data_cfg.random_flip))
    return key


def cache_path(data_cfg: Any, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return Path(data_cfg.cache_dir) / f"{key['kind']}-{key['dataset']}-{key['split']}-{digest}"


def read_manifest(path: Path) -> Optional[dict]:
    try:
        return json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


# --- building --------------------------------------------------------------------------
class _CacheSource(Dataset):
    """Item i -> the K cache clips of video i as ``(K, T, R, R, 3)`` uint8, or None if undecodable."""

    def __init__(self, clips: ClipDataset, positions: list[float]):
        self.clips, self.positions = clips, positions

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int):
        try:
            frames = [self.clips.read_clip(i, self.clips.frame_indices(i, u)) for u in self.positions]
        except UnreadableVideo as err:
            if self.clips.strict:
                raise DatasetError(f"cannot decode {err}; data.strict=true makes this an error") from err
            return i, None, str(err)
        return i, torch.stack(frames), None


def _first(batch):
    return batch[0]


def build_cache(data_cfg: Any, split: str, clips: ClipDataset, key: dict, target: Path,
                progress: bool = True, num_workers: int = 0, device: Optional[str] = None) -> Path:
    """Decode (and encode, for latents) every video once and write the cache folder at ``target``."""
    kind = key["kind"]
    positions = cache_positions(key["clips_per_video"])
    codec = None
    if kind == "latents":
        from vfusion.data.latents import LatentCodec

        codec = LatentCodec(data_cfg.vae_path, data_cfg.vae_scaling_factor)
        codec.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        flips = [False, True] if key["flipped"] else [False]
        item_shape = (len(positions), len(flips), *codec.latent_shape(clips.num_frames, clips.resolution))
        dtype = np.float32
    else:
        item_shape = (len(positions), clips.num_frames, clips.resolution, clips.resolution, 3)
        dtype = np.uint8
    item_bytes = int(np.prod(item_shape)) * np.dtype(dtype).itemsize
    rows_per_shard = max(1, SHARD_BYTES // item_bytes)

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    loader = DataLoader(_CacheSource(clips, positions), batch_size=1, shuffle=False, num_workers=num_workers,
                        collate_fn=_first)
    shards: list[dict] = []
    labels, keys, captions, failed = [], [], [], []
    shard = None
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(clips), desc=f"caching {kind} ({key['dataset']} {split})", unit="video")
    try:
        for i, frames, error in loader:
            if bar is not None:
                bar.update()
            if frames is None:
                warnings.warn(f"skipping undecodable video {error}", stacklevel=2)
                failed.append(error)
                continue
            if shard is None or shards[-1]["rows"] == shard.shape[0]:
                if shard is not None:
                    shard.flush()
                name = f"shard_{len(shards):05d}.npy"
                rows = min(rows_per_shard, len(clips) - i)
                shard = np.lib.format.open_memmap(tmp / name, mode="w+", dtype=dtype, shape=(rows, *item_shape))
                shards.append({"file": name, "rows": 0})
            if codec is not None:
                videos = torch.stack([to_clip(f, flip) for f in frames for flip in flips])   # (K*F, 3, T, R, R)
                value = codec.encode(videos).cpu().numpy().reshape(item_shape)
            else:
                value = frames.numpy()
            shard[shards[-1]["rows"]] = value
            shards[-1]["rows"] += 1
            labels.append(int(clips.index.items[i].label))
            keys.append(clips.index.items[i].key)
            captions.append(clips.index.items[i].caption)
        if shard is not None:
            shard.flush()
            del shard
        if not keys:
            raise DatasetError(f"no video of {clips.index.listing.description} could be decoded; nothing to cache")
        manifest = {
            "key": key, "kind": kind, "item_shape": list(item_shape), "dtype": np.dtype(dtype).name,
            "shards": shards, "labels": labels, "keys": keys, "class_names": clips.class_names,
            "captions": captions if clips.captioned else None,
            "description": clips.index.listing.description,
            "counts": {**clips.index.counts(), "videos": len(keys), "unreadable": len(clips.index.unreadable) + len(failed)},
            "undecodable": failed,
        }
        if codec is not None:
            manifest["scaling_factor"] = codec.scaling_factor
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        try:
            os.rename(tmp, target)
        except OSError:           # another process finished the same cache first: keep theirs
            if read_manifest(target) is None:
                raise
    finally:
        if bar is not None:
            bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# --- reading ---------------------------------------------------------------------------
class CachedDataset(Dataset):
    """``(clip or latents, label)`` from a cache folder (``(..., label, caption)`` for captioned data): uint8
    clips come out as ``(C, T, H, W)`` float32 in [-1, 1], latents as ``(c, T, h, w)`` float32."""

    def __init__(self, path: str | Path, train: bool = True, random_flip: bool = True, seed: int = 0,
                 class_conditional: bool = True):
        self.path = Path(path)
        manifest = read_manifest(self.path)
        if manifest is None:
            raise DatasetError(f"'{self.path}' is not a complete vfusion cache (no manifest.json); "
                               f"rebuild it with `vfusion data cache --config CFG`")
        self.manifest = manifest
        self.kind = manifest["kind"]
        self.train, self.seed = train, seed
        self.random_flip = random_flip and train
        self.class_conditional = class_conditional
        self.labels = manifest["labels"]
        self.captions = manifest.get("captions")
        self.item_shape = tuple(manifest["item_shape"])
        rows = [s["rows"] for s in manifest["shards"]]
        self._starts = np.cumsum([0] + rows)
        self._shards: Optional[list[np.ndarray]] = None
        self.random = TrainRandom(seed)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def class_names(self) -> list[str]:
        return self.manifest["class_names"]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def item(self, i: int) -> np.ndarray:
        """Everything stored for item ``i`` (memory-mapped, read-only)."""
        if self._shards is None:
            self._shards = [np.load(self.path / s["file"], mmap_mode="r") for s in self.manifest["shards"]]
        s = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self._shards[s][i - self._starts[s]]

    def __getitem__(self, i: int) -> tuple:
        value, label = self._clip(i)
        return (value, label, self.captions[i]) if self.captions is not None else (value, label)

    def _clip(self, i: int) -> tuple[torch.Tensor, int]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        stored = self.item(i)
        k_count = stored.shape[0]
        if self.train:
            rng = self.random.get()
            k = int(rng.integers(k_count))
            flip = bool(rng.random() < 0.5) if self.random_flip else False
        else:
            k, flip = min(int(eval_position(self.seed, i) * k_count), k_count - 1), False
        label = int(self.labels[i]) if self.class_conditional else 0
        if self.kind == "latents":
            variants = stored.shape[1]
            return torch.from_numpy(np.array(stored[k, 1 if flip and variants > 1 else 0])), label
        return to_clip(torch.from_numpy(np.array(stored[k])), flip), label
