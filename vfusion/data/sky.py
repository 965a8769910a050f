"""Sky Time-lapse layout: ``sky_train/`` and ``sky_test/`` folders of JPG frame folders.

Layout (MD-GAN release, see ``docs/protocols.md``, "Sky Time-lapse")::

    <root>/sky_train/<video>/<video>_<k>/<frame>.jpg     (two levels: long video -> short clips)
    <root>/sky_train/<video>/<frame>.jpg                 (one level: flattened copies)

Both depths are accepted, also mixed, and ``sky_test/`` alike. ``<root>`` may also be a folder that holds the
dataset one level down (``sky_timelapse/sky_timelapse/sky_train``). Frames are ordered by the numbers in their
names, not lexically. The dataset is unconditional: every label is 0. Common practice (center-crop the short side,
resize, no flip) is what ``configs/sky.yaml`` sets.
"""

from __future__ import annotations

import os
from pathlib import Path

from vfusion.data.errors import layout_error
from vfusion.data.sources import Listing, VideoItem, sorted_frames

SPLIT_DIRS = {"train": ("sky_train",), "test": ("sky_test",), "all": ("sky_train", "sky_test")}


def _find_split_dir(root: Path, name: str) -> Path | None:
    for base in [root] + sorted(p for p in root.iterdir() if p.is_dir()):
        for entry in (base.iterdir() if base.is_dir() else ()):
            if entry.is_dir() and entry.name.lower() == name:
                return entry
    return None


def _subdirs(folder: str) -> list[os.DirEntry]:
    with os.scandir(folder) as it:
        return sorted((e for e in it if e.is_dir() and not e.name.startswith(".")), key=lambda e: e.name)


def list_frame_videos(split_dir: Path, prefix: str) -> list[VideoItem]:
    """Frame folders one or two levels below ``split_dir``."""
    items = []
    for video in _subdirs(str(split_dir)):
        frames = sorted_frames(video.path)
        if frames:
            items.append(VideoItem(key=f"{prefix}/{video.name}", path=video.path, frames=frames))
        for clip in _subdirs(video.path):
            frames = sorted_frames(clip.path)
            if frames:
                items.append(VideoItem(key=f"{prefix}/{video.name}/{clip.name}", path=clip.path, frames=frames))
    return items


def list_sky(root: str | Path, split: str = "train") -> Listing:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise layout_error("sky", f"data.root '{root}' does not exist")
    if split not in SPLIT_DIRS:
        raise layout_error("sky", f"split '{split}' is not one of train, test, all")
    items, dirs = [], []
    for name in SPLIT_DIRS[split]:
        split_dir = _find_split_dir(root, name)
        if split_dir is None:
            raise layout_error("sky", f"no {name}/ folder in '{root}' (nor one level below it)")
        found = list_frame_videos(split_dir, name)
        if not found:
            raise layout_error("sky", f"'{split_dir}' holds no frame folders of .jpg/.png images")
        items += found
        dirs.append(str(split_dir))
    return Listing(dataset="sky", items=items, class_names=["sky"],
                   description=f"Sky Time-lapse layout, {split}: {', '.join(dirs)}")


def list_from_config(data_cfg, split: str) -> Listing:
    """The registry's listing function for ``data.dataset=sky``."""
    return list_sky(data_cfg.root, split)
