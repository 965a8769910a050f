"""The decoding dataset: one clip per video per access, ``(video, label)``, or
``(video, label, caption)`` for a captioned dataset.

``video`` is ``(C, T, H, W)`` float32 in [-1, 1] (``vfusion.layout``), ``label`` an
int (0 when the run is unconditional), ``caption`` the video's text. Training draws the clip's start and the
flip from a per-process generator that is reseeded in every DataLoader worker
from ``torch.initial_seed()`` (different per worker and per epoch, reproducible
from the loader's seed); evaluation uses a start fixed by ``(seed, index)`` and
never flips. A file that fails to decode is skipped with a warning naming it (the
next video is returned instead) and counted in ``decode_failures`` of the process;
with ``strict`` it is an error.
"""

from __future__ import annotations

import os
import warnings
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from vfusion.data.clips import center_crop_resize, clip_indices, eval_position, to_clip
from vfusion.data.errors import DatasetError
from vfusion.data.index import VideoIndex
from vfusion.data.sources import FrameReader, UnreadableVideo


class TrainRandom:
    """A numpy generator owned by the current process (reseeded after a fork)."""

    def __init__(self, seed: int):
        self.seed = seed
        self._pid: Optional[int] = None
        self._rng: Optional[np.random.Generator] = None

    def reseed(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        self._pid = os.getpid()

    def get(self) -> np.random.Generator:
        if self._rng is None or self._pid != os.getpid():
            info = torch.utils.data.get_worker_info()
            self.reseed(info.seed if info is not None else self.seed)
        return self._rng  # type: ignore[return-value]


class ClipDataset(Dataset):
    """Clips decoded on the fly from the videos of a :class:`VideoIndex`."""

    def __init__(self, index: VideoIndex, num_frames: int, frame_stride: int, resolution: int,
                 short_policy: str = "lower_stride", train: bool = True, random_flip: bool = True,
                 seed: int = 0, strict: bool = False, class_conditional: bool = True, max_open_readers: int = 8):
        self.index = index
        self.num_frames = num_frames
        self.frame_stride = frame_stride
        self.resolution = resolution
        self.short_policy = short_policy
        self.train = train
        self.random_flip = random_flip and train
        self.seed = seed
        self.strict = strict
        self.class_conditional = class_conditional
        self.reader = FrameReader(max_open=max_open_readers)
        self.random = TrainRandom(seed)
        self.decode_failures: list[str] = []

    # --- what the dataset is -------------------------------------------------------
    def __len__(self) -> int:
        return len(self.index.items)

    @property
    def class_names(self) -> list[str]:
        return self.index.class_names

    @property
    def num_classes(self) -> int:
        return len(self.index.class_names)

    def label(self, i: int) -> int:
        return int(self.index.items[i].label) if self.class_conditional else 0

    @property
    def captioned(self) -> bool:
        return self.index.listing.captioned

    def caption(self, i: int) -> str:
        return self.index.items[i].caption or ""

    # --- sampling --------------------------------------------------------------------
    def frame_indices(self, i: int, u: float) -> np.ndarray:
        """Source-frame indices of the clip of video ``i`` at position ``u`` in [0, 1)."""
        idx = clip_indices(self.index.lengths[i], self.num_frames, self.frame_stride, self.short_policy, u)
        assert idx is not None, "short videos are removed from the index under short_policy=skip"
        return idx

    def read_clip(self, i: int, indices: np.ndarray) -> torch.Tensor:
        """Frames ``indices`` of video ``i``, cropped and resized: ``(T, R, R, 3)`` uint8."""
        frames = self.reader.read(self.index.items[i], indices)
        return center_crop_resize(frames, self.resolution)

    def _draw(self, i: int) -> tuple[float, bool]:
        if not self.train:
            return eval_position(self.seed, i), False
        rng = self.random.get()
        u = float(rng.random())
        flip = bool(rng.random() < 0.5) if self.random_flip else False
        return u, flip

    def __getitem__(self, i: int) -> tuple:
        if not 0 <= i < len(self):
            raise IndexError(i)
        for attempt in range(min(len(self), 16)):
            j = (i + attempt) % len(self)
            u, flip = self._draw(j)
            try:
                frames = self.read_clip(j, self.frame_indices(j, u))
            except UnreadableVideo as err:
                if self.strict:
                    raise DatasetError(f"cannot decode {err}; data.strict=true makes this an error "
                                       f"(set data.strict=false to skip it)") from err
                if str(err) not in self.decode_failures:
                    self.decode_failures.append(str(err))
                    warnings.warn(f"skipping undecodable video {err}", stacklevel=2)
                continue
            clip = to_clip(frames, flip)
            return (clip, self.label(j), self.caption(j)) if self.captioned else (clip, self.label(j))
        raise DatasetError(f"16 videos in a row failed to decode, the last: {self.decode_failures[-1]}")
