"""Captioned video datasets: ``captions`` (a CSV or sidecar ``.txt`` files) and ``webvid``.

``captions``: ``<root>/**/<name>.mp4`` with ``<name>.txt`` beside it (video2dataset's WebVid layout:
``00000/000000001.mp4`` + ``000000001.txt``), or ``<root>/captions.csv`` (or ``data.captions_file``) with columns
``video,caption`` and video paths relative to ``<root>``; optional ``<root>/train`` and ``<root>/test`` as in the
folder layout. ``webvid``: WebVid's metadata CSV (``videoid,name,page_dir,...``; ``data.captions_file``, else the
one ``*.csv`` in ``<root>``, or the one whose name says train / val|test) with videos at
``<root>/<page_dir>/<videoid>.mp4``.

A video whose caption is missing, empty or unreadable stops the listing with one line
(``data.missing_caption=error``, the default) or is left out and counted (``skip``); ``vfusion data check``
always counts them. Captions are stripped of surrounding white space; line breaks inside one become spaces.
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path
from typing import Callable, Optional

from vfusion.data.errors import DatasetError, layout_error
from vfusion.data.folder import list_folder, split_bases
from vfusion.data.sources import Listing, VideoItem

CSV_NAME = "captions.csv"
MISSING_CAPTION = ("error", "skip")
WEBVID_COLUMNS = ("videoid", "name", "page_dir")


def clean_caption(text: str) -> str:
    return " ".join(text.split())


def sidecar_path(item: VideoItem) -> str:
    """``NAME.txt`` beside a video file ``NAME.ext`` (or beside a frame folder ``NAME/``)."""
    return item.path.rstrip("/\\") + ".txt" if item.is_frame_folder else os.path.splitext(item.path)[0] + ".txt"


def read_sidecar(path: str) -> tuple[Optional[str], Optional[str]]:
    """``(caption, None)`` or ``(None, why not)`` for a sidecar caption file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = clean_caption(f.read())
    except FileNotFoundError:
        return None, f"no caption file {os.path.basename(path)}"
    except (OSError, UnicodeDecodeError) as err:
        return None, f"unreadable caption file {os.path.basename(path)} ({type(err).__name__})"
    return (text, None) if text else (None, f"empty caption file {os.path.basename(path)}")


def apply_captions(listing: Listing, caption_of: Callable[[VideoItem], tuple[Optional[str], Optional[str]]],
                   policy: str, fix: str) -> Listing:
    """Give every item of ``listing`` its caption; a video without one is an error or a counted skip
    (``policy``). ``fix`` says where captions come from, for the error message."""
    if policy not in MISSING_CAPTION:
        raise DatasetError(f"data.missing_caption is '{policy}'; expected one of {', '.join(MISSING_CAPTION)}")
    items, skipped = [], []
    for item in listing.items:
        caption, problem = caption_of(item)
        if caption is None:
            if policy == "error":
                raise DatasetError(f"{item.path} has no usable caption ({problem}); {fix}, or set "
                                   f"data.missing_caption=skip to leave such videos out")
            skipped.append(f"{item.key}: {problem}")
            continue
        items.append(VideoItem(key=item.key, path=item.path, label=item.label, frames=item.frames, caption=caption))
    if skipped:
        warnings.warn(f"{len(skipped)} video(s) of {listing.description} left out for a missing, empty or unreadable "
                      f"caption (data.missing_caption=skip), the first: {skipped[0]}", stacklevel=2)
    if not items and listing.items:
        raise DatasetError(f"no video of {listing.description} has a usable caption (the first: {skipped[0]}); {fix}")
    return Listing(dataset=listing.dataset, items=items, class_names=["video"], description=listing.description,
                   missing=list(listing.missing), captioned=True, caption_skipped=skipped)


def _read_csv(path: Path, required: tuple[str, ...], dataset: str) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in required if c not in columns]
            if missing:
                raise layout_error(dataset, f"{path} has columns {columns}, not {', '.join(missing)}")
            reader.fieldnames = columns
            return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise layout_error(dataset, f"cannot read {path} ({' '.join(str(err).split())[:200]})") from err


def _rel_key(path: str) -> str:
    return Path(path.strip().replace("\\", "/")).as_posix().removeprefix("./")


def list_captions(root: str | Path, split: str = "train", captions_file: Optional[str] = None,
                  missing_caption: str = "error") -> Listing:
    """A folder of videos (the folder layout, splits included) with the caption of each."""
    root = Path(root).expanduser()
    table_path = Path(captions_file).expanduser() if captions_file else root / CSV_NAME
    if captions_file and not table_path.is_absolute() and not table_path.is_file():
        table_path = root / captions_file
    if captions_file and not table_path.is_file():
        raise layout_error("captions", f"data.captions_file '{captions_file}' does not exist")
    listing = list_folder(root, split, dataset="captions")
    if table_path.is_file():
        rows = _read_csv(table_path, ("video", "caption"), "captions")
        table = {_rel_key(r["video"] or ""): clean_caption(r["caption"] or "") for r in rows}
        resolved = root.resolve()
        bases = [b.resolve() for b in split_bases(root, split)]
        listing.missing = [k for k in table if not (root / k).exists()
                           and any((resolved / k).resolve().is_relative_to(b) for b in bases)]

        def caption_of(item: VideoItem):
            key = Path(os.path.relpath(Path(item.path).resolve(), resolved)).as_posix()
            if key not in table:
                return None, f"not in {table_path.name}"
            return (table[key], None) if table[key] else (None, f"empty caption in {table_path.name}")

        listing.description = f"captions layout, {split}: {root} (captions: {table_path})"
        return apply_captions(listing, caption_of, missing_caption,
                              f"add a row for it to {table_path}")
    listing.description = f"captions layout, {split}: {root} (sidecar NAME.txt captions)"
    return apply_captions(listing, lambda it: read_sidecar(sidecar_path(it)), missing_caption,
                          "write its caption into NAME.txt beside it (or a captions.csv in the root)")


def webvid_csvs(root: Path, split: str, captions_file: Optional[str]) -> list[Path]:
    """The metadata CSV(s) of ``split``: ``data.captions_file``, else the CSVs in ``root`` chosen by name."""
    if captions_file:
        path = Path(captions_file).expanduser()
        path = path if path.is_absolute() or path.is_file() else root / captions_file
        if not path.is_file():
            raise layout_error("webvid", f"data.captions_file '{captions_file}' does not exist")
        return [path]
    found = sorted(root.glob("*.csv"))
    if not found:
        raise layout_error("webvid", f"no metadata CSV in {root}")
    if len(found) == 1:
        return found
    words = {"train": ("train",), "test": ("val", "test"), "all": ("",)}[split]
    chosen = [p for p in found if any(w in p.name.lower() for w in words)]
    if not chosen or (split != "all" and len(chosen) > 1):
        raise layout_error("webvid", f"{root} holds {len(found)} CSVs ({', '.join(p.name for p in found)}) and the "
                                     f"{split} split cannot be told apart by name; set data.captions_file")
    return chosen


def list_webvid(root: str | Path, split: str = "train", captions_file: Optional[str] = None,
                missing_caption: str = "error") -> Listing:
    """WebVid: one row per video of the metadata CSV; listed videos absent on disk are ``missing``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise layout_error("webvid", f"data.root '{root}' does not exist")
    files = webvid_csvs(root, split, captions_file)
    items, missing, seen = [], [], set()
    for path in files:
        for row in _read_csv(path, WEBVID_COLUMNS, "webvid"):
            key = f"{(row['page_dir'] or '').strip()}/{(row['videoid'] or '').strip()}"
            if key in seen:
                continue
            seen.add(key)
            video = root / f"{key}.mp4"
            if not video.is_file():
                missing.append(key)
                continue
            items.append(VideoItem(key=key, path=str(video), caption=clean_caption(row["name"] or "")))
    desc = f"webvid, {split}: {root} (metadata: {', '.join(p.name for p in files)})"
    if not items:
        raise layout_error("webvid", f"none of the {len(missing)} videos of {', '.join(map(str, files))} is on disk "
                                     f"at <root>/<page_dir>/<videoid>.mp4")
    listing = Listing(dataset="webvid", items=items, class_names=["video"], description=desc, missing=missing)
    return apply_captions(listing, lambda it: (it.caption, None) if it.caption else (None, "empty name in the CSV"),
                          missing_caption, "give it a caption in the CSV's name column")


def list_captions_from_config(data_cfg, split: str) -> Listing:
    """The registry's listing function for ``data.dataset=captions``."""
    return list_captions(data_cfg.root, split, data_cfg.get("captions_file"), data_cfg.get("missing_caption", "error"))


def list_webvid_from_config(data_cfg, split: str) -> Listing:
    """The registry's listing function for ``data.dataset=webvid``."""
    return list_webvid(data_cfg.root, split, data_cfg.get("captions_file"), data_cfg.get("missing_caption", "error"))
