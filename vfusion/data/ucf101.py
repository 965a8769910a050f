"""UCF-101 layout: class folders of ``.avi`` files plus the ``ucfTrainTestlist`` split files.

Layout (see ``docs/protocols.md``, "UCF-101")::

    <root>/UCF-101/<Class>/v_<Class>_gXX_cYY.avi
    <root>/ucfTrainTestlist/classInd.txt        "1 ApplyEyeMakeup" (1-based)
    <root>/ucfTrainTestlist/trainlist0K.txt     "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1" (testlist0K: no label)

The split folder may also sit inside the folder of classes, or be given as ``data.splits_dir``; ``<root>`` may be
the folder of classes itself. Folds are 1-3, splits ``train``, ``test`` or ``all`` (train + test of the fold).
Labels are the classInd indices made 0-based. Every name is matched case-insensitively: the release spells some
classes differently in the list files and on disk (``HandStandPushups`` / ``HandstandPushups``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional

from vfusion.data.errors import DatasetError, layout_error
from vfusion.data.sources import Listing, VideoItem

VIDEO_DIR_NAMES = ("ucf-101", "ucf101")
SPLITS_DIR_NAME = "ucftraintestlist"


def _child(folder: Path, name: str, want_dir: bool = True) -> Optional[Path]:
    """The entry of ``folder`` whose name equals ``name`` ignoring case."""
    if not folder.is_dir():
        return None
    with os.scandir(folder) as it:
        for entry in sorted(it, key=lambda e: e.name):
            if entry.name.lower() == name.lower() and (entry.is_dir() if want_dir else entry.is_file()):
                return Path(entry.path)
    return None


def _has_class_folders(folder: Path) -> bool:
    with os.scandir(folder) as it:
        for entry in it:
            if entry.is_dir() and entry.name.lower() != SPLITS_DIR_NAME:
                with os.scandir(entry.path) as inner:
                    if any(e.name.lower().endswith(".avi") for e in inner):
                        return True
    return False


def find_layout(root: str | Path, splits_dir: Optional[str | Path] = None,
                dataset: str = "ucf101") -> tuple[Path, Path]:
    """``(folder of classes, split folder)`` under ``root``; :class:`DatasetError` if not found."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise layout_error(dataset, f"data.root '{root}' does not exist")
    videos = next((p for p in (_child(root, n) for n in VIDEO_DIR_NAMES) if p is not None), None)
    if videos is None:
        if not _has_class_folders(root):
            raise layout_error(dataset, f"no UCF-101 class folders of .avi files found in '{root}' "
                                        f"(nor in {root}/UCF-101)")
        videos = root
    elif not _has_class_folders(videos):
        raise layout_error(dataset, f"'{videos}' holds no class folders of .avi files")
    if splits_dir is not None:
        splits = Path(splits_dir).expanduser()
        if _child(splits, "classInd.txt", want_dir=False) is None:
            raise layout_error(dataset, f"data.splits_dir '{splits}' has no classInd.txt")
        return videos, splits
    for candidate in (root, videos, videos.parent):
        splits = _child(candidate, SPLITS_DIR_NAME)
        if splits is not None and _child(splits, "classInd.txt", want_dir=False) is not None:
            return videos, splits
    raise layout_error(dataset, f"found the class folders in '{videos}' but no ucfTrainTestlist/ with "
                                f"classInd.txt beside or inside them; set data.splits_dir=PATH if it lives elsewhere")


def _read_lines(path: Path) -> list[list[str]]:
    text = path.read_text(encoding="utf-8", errors="replace")
    return [line.split() for line in text.splitlines() if line.strip()]


def read_class_index(splits: Path) -> list[str]:
    """Class names in label order (classInd.txt's 1-based indices made 0-based)."""
    path = _child(splits, "classInd.txt", want_dir=False)
    assert path is not None
    pairs = []
    for fields in _read_lines(path):
        if len(fields) != 2 or not fields[0].isdigit():
            raise DatasetError(f"{path}: line '{' '.join(fields)}' is not of the form '<index> <ClassName>'")
        pairs.append((int(fields[0]), fields[1]))
    indices = sorted(i for i, _ in pairs)
    if indices != list(range(1, len(pairs) + 1)):
        raise DatasetError(f"{path}: class indices must be 1..{len(pairs)} without gaps or repeats")
    return [name for _, name in sorted(pairs)]


def _split_entries(splits: Path, split: str, fold: int) -> list[tuple[str, Optional[int]]]:
    names = {"train": [f"trainlist0{fold}.txt"], "test": [f"testlist0{fold}.txt"],
             "all": [f"trainlist0{fold}.txt", f"testlist0{fold}.txt"]}
    if split not in names:
        raise DatasetError(f"split '{split}' is not one of train, test, all")
    if fold not in (1, 2, 3):
        raise DatasetError(f"fold {fold} does not exist; UCF-101 has folds 1, 2 and 3")
    entries, seen = [], set()
    for name in names[split]:
        path = _child(splits, name, want_dir=False)
        if path is None:
            raise DatasetError(f"split file {name} is missing from '{splits}' (data.fold={fold}, data.split={split})")
        for fields in _read_lines(path):
            rel = fields[0].replace("\\", "/").strip("/")
            number = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
            if rel.lower() not in seen:
                seen.add(rel.lower())
                entries.append((rel, number))
    return entries


def _files_on_disk(videos: Path) -> dict[str, str]:
    """Lower-cased ``Class/file.avi`` -> actual path, for every file one level down."""
    found = {}
    with os.scandir(videos) as classes:
        for cls in classes:
            if not cls.is_dir():
                continue
            with os.scandir(cls.path) as files:
                for f in files:
                    if f.is_file():
                        found[f"{cls.name}/{f.name}".lower()] = f.path
    return found


def list_ucf101(root: str | Path, split: str = "train", fold: int = 1, splits_dir: Optional[str | Path] = None,
                strict: bool = False, dataset: str = "ucf101") -> Listing:
    """The videos of one fold/split. Entries of the list files that are absent on disk are
    counted in ``Listing.missing`` (a warning; an error with ``strict``)."""
    videos, splits = find_layout(root, splits_dir, dataset=dataset)
    class_names = read_class_index(splits)
    label_of = {name.lower(): i for i, name in enumerate(class_names)}
    on_disk = _files_on_disk(videos)
    items, missing = [], []
    for rel, number in _split_entries(splits, split, fold):
        path = on_disk.get(rel.lower())
        if path is None:
            missing.append(rel)
            continue
        cls = rel.split("/")[0].lower()
        if cls in label_of:
            label = label_of[cls]
        elif number is not None and 1 <= number <= len(class_names):
            label = number - 1
        else:
            raise DatasetError(f"'{rel}' (in the fold-{fold} {split} list of {splits}) names class '{rel.split('/')[0]}' "
                               f"that classInd.txt does not list")
        items.append(VideoItem(key=rel, path=path, label=label))
    if missing:
        msg = (f"{len(missing)} video(s) of the UCF-101 fold-{fold} {split} list are not in '{videos}' "
               f"(first: {', '.join(missing[:3])})")
        if strict:
            raise DatasetError(msg + "; data.strict=true makes this an error")
        warnings.warn(msg + "; they are skipped", stacklevel=2)
    if not items:
        raise layout_error(dataset, f"the fold-{fold} {split} list of '{splits}' names no video present in '{videos}'")
    desc = f"UCF-101 layout, fold {fold} {split}, videos {videos}, splits {splits}"
    return Listing(dataset=dataset, items=items, class_names=class_names, description=desc, missing=missing)


def list_from_config(data_cfg, split: str) -> Listing:
    """The registry's listing function for ``data.dataset=ucf101``."""
    return list_ucf101(data_cfg.root, split, int(data_cfg.fold), data_cfg.splits_dir, strict=bool(data_cfg.strict))
