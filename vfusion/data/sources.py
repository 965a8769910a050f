"""Video sources: what a dataset lists, and how its frames are read.

A dataset layout (UCF-101, Sky Time-lapse, a generic folder) produces a
:class:`Listing` of :class:`VideoItem`s. An item is either a video file, decoded
with decord, or a folder of frame images, ordered by the numbers in their names
(``frame_2.jpg`` before ``frame_10.jpg``). :class:`FrameReader` returns the
requested frames as ``(T, H, W, 3)`` uint8 RGB arrays and keeps a small
per-process LRU of open decord readers (a reader opened before a DataLoader
forks is never reused in a worker).
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv",
                    ".3gp", ".ogv", ".ts")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key that compares the digit runs of a name as numbers (``f2`` < ``f10``)."""
    parts = _DIGITS.split(name.lower())
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def is_video(name: str) -> bool:
    return name.lower().endswith(VIDEO_EXTENSIONS)


def sorted_frames(folder: str | Path) -> tuple[str, ...]:
    """Image file names directly inside ``folder``, in frame order."""
    with os.scandir(folder) as it:
        names = [e.name for e in it if e.is_file() and is_image(e.name) and not e.name.startswith(".")]
    return tuple(sorted(names, key=natural_key))


@dataclass(frozen=True)
class VideoItem:
    """One video: a file (``frames is None``) or a folder of frame images."""

    key: str                       # stable identifier, relative to the dataset root
    path: str                      # the file, or the folder of frames
    label: int = 0
    frames: Optional[tuple[str, ...]] = None   # ordered frame file names (frame folders only)
    caption: Optional[str] = None              # captioned datasets: the text this video is trained on

    @property
    def is_frame_folder(self) -> bool:
        return self.frames is not None


@dataclass
class Listing:
    """The videos of one split of one dataset, before any file is opened."""

    dataset: str
    items: list[VideoItem]
    class_names: list[str]
    description: str               # e.g. "UCF-101 fold 1 train at /data/ucf (splits: /data/ucf/ucfTrainTestlist)"
    missing: list[str] = field(default_factory=list)   # listed in a split file, absent on disk
    captioned: bool = False                            # every item carries a caption
    # captioned datasets: "key: reason" of videos left out for a missing, empty or unreadable caption
    caption_skipped: list[str] = field(default_factory=list)


class UnreadableVideo(RuntimeError):
    """A file decord cannot open or decode, or a frame image PIL cannot read."""


def count_frames(item: VideoItem) -> int:
    """Number of frames of ``item`` (opens video files; raises :class:`UnreadableVideo`)."""
    if item.frames is not None:
        return len(item.frames)
    import decord

    try:
        reader = decord.VideoReader(item.path, ctx=decord.cpu(0), num_threads=1)
        n = len(reader)
    except Exception as err:  # decord raises RuntimeError/DECORDError with ffmpeg's log
        raise UnreadableVideo(f"{item.path}: {_first_line(err)}") from err
    if n <= 0:
        raise UnreadableVideo(f"{item.path}: no video frames")
    return n


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


class FrameReader:
    """Reads frames of :class:`VideoItem`s, reusing open decord readers (LRU, per process)."""

    def __init__(self, max_open: int = 8, decode_threads: int = 1):
        self.max_open = max_open
        self.decode_threads = decode_threads
        self._readers: OrderedDict[str, object] = OrderedDict()
        self._pid = os.getpid()

    def __getstate__(self):  # open readers never travel to another process
        state = self.__dict__.copy()
        state["_readers"] = OrderedDict()
        return state

    def _reader(self, path: str):
        import decord

        if self._pid != os.getpid():
            self._readers = OrderedDict()
            self._pid = os.getpid()
        reader = self._readers.get(path)
        if reader is None:
            reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=self.decode_threads)
            self._readers[path] = reader
            while len(self._readers) > self.max_open:
                self._readers.popitem(last=False)
        else:
            self._readers.move_to_end(path)
        return reader

    def close(self) -> None:
        self._readers.clear()

    def read(self, item: VideoItem, indices: Sequence[int]) -> np.ndarray:
        """Frames ``indices`` of ``item`` -> ``(len(indices), H, W, 3)`` uint8 RGB."""
        indices = np.asarray(indices, dtype=np.int64)
        unique, inverse = np.unique(indices, return_inverse=True)   # decode each frame once, in order
        try:
            if item.frames is not None:
                frames = np.stack([_read_image(os.path.join(item.path, item.frames[k])) for k in unique])
            else:
                reader = self._reader(item.path)
                frames = reader.get_batch(unique.tolist()).asnumpy()
        except Exception as err:
            self._readers.pop(item.path, None)
            raise UnreadableVideo(f"{item.path}: {_first_line(err)}") from err
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise UnreadableVideo(f"{item.path}: decoded frames have shape {frames.shape}, expected (T, H, W, 3)")
        return frames[inverse]


def _read_image(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
