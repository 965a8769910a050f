"""The video index: frame counts and readability of a listing, with the short policy applied.

Opening every file of a dataset once (decord reads the container index, about a
millisecond per UCF-101 file) gives its frame count; files that do not open are
*unreadable*: skipped with a warning naming them, or an error under
``data.strict``. Videos shorter than a clip's span are counted as *short* and,
with ``data.short_policy=skip``, left out. Frame counts are remembered in
``<data.cache_dir>/probe/<hash of the listing root>.json`` keyed by path, size and
modification time, so a second run does not reopen unchanged files.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from vfusion.data.clips import is_short
from vfusion.data.errors import DatasetError
from vfusion.data.sources import Listing, UnreadableVideo, VideoItem, count_frames


@dataclass
class VideoIndex:
    """The usable videos of one split and what was left out."""

    listing: Listing
    items: list[VideoItem]
    lengths: list[int]
    unreadable: list[str] = field(default_factory=list)     # "path: reason"
    short: list[str] = field(default_factory=list)          # keys of short videos (kept or skipped)
    skipped_short: int = 0

    @property
    def class_names(self) -> list[str]:
        return self.listing.class_names

    def counts(self) -> dict:
        return {
            "videos": len(self.items),
            "listed": len(self.listing.items) + len(self.listing.missing) + len(self.listing.caption_skipped),
            "missing": len(self.listing.missing),
            "unreadable": len(self.unreadable),
            "short": len(self.short),
            "skipped_short": self.skipped_short,
            "frames": int(sum(self.lengths)),
            "caption_skipped": len(self.listing.caption_skipped),
        }

    def fingerprint(self) -> str:
        """Changes whenever a usable video, its label, its length or its caption changes."""
        h = hashlib.sha256()
        for item, n in zip(self.items, self.lengths):
            caption = "" if item.caption is None else f"\0{item.caption}"
            h.update(f"{item.key}\0{item.label}\0{n}\0{_stat_key(item.path)}{caption}\n".encode())
        return h.hexdigest()[:16]


def _stat_key(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "?"
    return f"{st.st_size}:{st.st_mtime_ns}"


class _ProbeCache:
    """Frame counts of video files, remembered across runs (best effort: never fails a run)."""

    def __init__(self, cache_dir: Optional[str], listing: Listing):
        self.path: Optional[Path] = None
        self.entries: dict[str, list] = {}
        self.dirty = False
        files = [it for it in listing.items if not it.is_frame_folder]
        if cache_dir is None or not files:
            return
        common = os.path.commonpath([os.path.abspath(it.path) for it in files])
        self.path = Path(cache_dir) / "probe" / (hashlib.sha256(common.encode()).hexdigest()[:16] + ".json")
        try:
            self.entries = json.loads(self.path.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            self.entries = {}

    def get(self, path: str) -> Optional[int]:
        entry = self.entries.get(os.path.abspath(path))
        return entry[1] if entry and entry[0] == _stat_key(path) else None

    def put(self, path: str, n: int) -> None:
        self.entries[os.path.abspath(path)] = [_stat_key(path), n]
        self.dirty = True

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        from vfusion.utils.io import atomic_write_json

        try:
            atomic_write_json(self.path, {"files": self.entries})
        except OSError as err:
            warnings.warn(f"could not write the frame-count cache {self.path} ({err}); counts are not remembered")


def build_index(listing: Listing, num_frames: int, stride: int, short_policy: str, strict: bool = False,
                cache_dir: Optional[str] = None, progress: bool = True) -> VideoIndex:
    """Open every video once (or use remembered counts) and apply the short policy."""
    probe = _ProbeCache(cache_dir, listing)
    items, lengths, unreadable, short, skipped = [], [], [], [], 0
    todo = listing.items
    bar = None
    if progress and sum(1 for it in todo if not it.is_frame_folder) > 1000:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=f"indexing {listing.dataset}", unit="video", leave=False)
    for item in todo:
        n = None if item.is_frame_folder else probe.get(item.path)
        if n is None:
            try:
                n = count_frames(item)
            except UnreadableVideo as err:
                if strict:
                    raise DatasetError(f"unreadable video {err}; data.strict=true makes this an error "
                                       f"(set data.strict=false to skip it)") from err
                warnings.warn(f"skipping unreadable video {err}", stacklevel=2)
                unreadable.append(str(err))
                n = None
            else:
                if not item.is_frame_folder:
                    probe.put(item.path, n)
        if bar is not None:
            bar.update()
        if n is None:
            continue
        if is_short(n, num_frames, stride):
            short.append(item.key)
            if short_policy == "skip":
                skipped += 1
                continue
        items.append(item)
        lengths.append(n)
    if bar is not None:
        bar.close()
    probe.save()
    if short:
        action = "skipped" if short_policy == "skip" else f"kept with short_policy={short_policy}"
        warnings.warn(f"{len(short)} video(s) of {listing.description} have fewer than "
                      f"{(num_frames - 1) * stride + 1} frames ({num_frames} frames at stride {stride}): {action}",
                      stacklevel=2)
    if not items:
        raise DatasetError(f"no usable video in {listing.description}: {len(unreadable)} unreadable, "
                           f"{skipped} too short for {num_frames} frames at stride {stride} "
                           f"(data.short_policy=loop or lower_stride keeps short videos)")
    return VideoIndex(listing=listing, items=items, lengths=lengths, unreadable=unreadable, short=short,
                      skipped_short=skipped)
