"""Generic layout: any folder of decord-readable videos and/or folders of frames.

::

    <root>/**/<name>.mp4|.avi|.mkv|.mov|.webm|...      a video file
    <root>/**/<name>/<frame>.jpg|.png                  a frame folder (frames in numeric order)
    <root>/train/..., <root>/test/...                  optional splits (else every split is the whole root)

With ``data.labels_from_subfolders`` the first-level subfolders (below the split
folder, if any) are the classes, in sorted order; otherwise every label is 0.
"""

from __future__ import annotations

import os
from pathlib import Path

from vfusion.data.errors import layout_error
from vfusion.data.sources import Listing, VideoItem, is_image, is_video, natural_key


def _child_dir(root: Path, name: str) -> Path | None:
    return next((p for p in sorted(root.iterdir()) if p.is_dir() and p.name.lower() == name), None)


def _walk(base: Path) -> list[VideoItem]:
    items = []
    for folder, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files = sorted(f for f in files if not f.startswith("."))
        rel = Path(folder).relative_to(base).as_posix()
        images = sorted((f for f in files if is_image(f)), key=natural_key)
        if images:
            items.append(VideoItem(key=base.name if rel == "." else rel, path=folder, frames=tuple(images)))
        for f in files:
            if is_video(f):
                key = f if rel == "." else f"{rel}/{f}"
                items.append(VideoItem(key=key, path=os.path.join(folder, f)))
    return sorted(items, key=lambda it: natural_key(it.key))


def split_bases(root: Path, split: str) -> list[Path]:
    """The folders holding ``split``: ``root/train`` and/or ``root/test`` when both exist, else ``root``."""
    split_dirs = {s: _child_dir(root, s) for s in ("train", "test")}
    if all(split_dirs.values()):
        return [split_dirs["train"], split_dirs["test"]] if split == "all" else [split_dirs[split]]
    return [root]


def list_folder(root: str | Path, split: str = "train", labels_from_subfolders: bool = False,
                dataset: str = "folder") -> Listing:
    """``dataset``: the layout named in errors (layouts built on this one, e.g. ``captions``)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise layout_error(dataset, f"data.root '{root}' does not exist")
    bases = split_bases(root, split)
    items: list[VideoItem] = []
    for base in bases:
        items += [VideoItem(key=f"{base.name}/{it.key}" if base != root else it.key, path=it.path,
                            frames=it.frames) for it in _walk(base)]
    if not items:
        raise layout_error(dataset, f"no video files or frame folders found under {', '.join(map(str, bases))}")
    class_names = ["video"]
    if labels_from_subfolders:
        def class_of(item: VideoItem, base_rel: str) -> str:
            parts = Path(os.path.relpath(item.path, base_rel)).parts
            if len(parts) < 2 and item.frames is None:
                raise layout_error("folder", f"data.labels_from_subfolders is set but '{item.path}' is not inside a "
                                             f"class subfolder of '{base_rel}'")
            return parts[0]

        owners = [next(b for b in bases if Path(it.path).is_relative_to(b)) for it in items]
        names = [class_of(it, str(b)) for it, b in zip(items, owners)]
        class_names = sorted(set(names), key=natural_key)
        label_of = {n: i for i, n in enumerate(class_names)}
        items = [VideoItem(key=it.key, path=it.path, label=label_of[n], frames=it.frames) for it, n in zip(items, names)]
    desc = f"folder layout, {split}: {', '.join(map(str, bases))}"
    return Listing(dataset=dataset, items=items, class_names=class_names, description=desc)


def list_from_config(data_cfg, split: str) -> Listing:
    """The registry's listing function for ``data.dataset=folder``."""
    return list_folder(data_cfg.root, split, bool(data_cfg.labels_from_subfolders))
