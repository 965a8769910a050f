"""Where evaluation gets its clips: folders of video files, or disjoint seeded subsets of a
configured dataset, as batches ``(B, C, T, H, W)`` in [-1, 1]."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vfusion.errors import UserError
from vfusion.layout import fold_frames, unfold_frames

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")
SUBSET_SEED = 0  # which real clips are used: fixed, so the real statistics can be cached


def video_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"video folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not files:
        raise UserError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) under {folder}")
    return files


# files a samples folder holds besides its per-video files (never clips to evaluate)
NOT_CLIPS = ("grid", "filmstrip")


def fake_video_files(folder: str | Path) -> list[Path]:
    """The per-video files of a folder of generated clips.

    A folder written by ``vfusion sample`` (``video_*.mp4``): those files only. Any other folder: every
    video file except ``grid.*`` / ``filmstrip.*`` previews.
    """
    files = video_files(folder)
    ours = [f for f in files if f.name.startswith("video_")]
    chosen = ours or [f for f in files if f.stem not in NOT_CLIPS]
    if not chosen:
        raise UserError(f"{folder} holds only preview files ({', '.join(f.name for f in files)}), no clips")
    return chosen


def clip_shape(path: Path) -> tuple[int, int, int]:
    """``(frames, height, width)`` of a video file, read from its first frame and length (no full decode)."""
    try:
        if path.suffix.lower() == ".gif":
            from PIL import Image

            with Image.open(path) as im:
                return int(getattr(im, "n_frames", 1)), im.size[1], im.size[0]
        import decord

        vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
        h, w = vr[0].shape[:2]
        return len(vr), int(h), int(w)
    except Exception as err:  # noqa: BLE001 - decoder errors have many types
        raise UserError(f"cannot read video {path}: {err}") from err


def check_same_size(files: Sequence[Path], num_frames: Optional[int] = None) -> tuple[int, int, int]:
    """The common ``(frames, height, width)`` of the clips, or one error naming two files that differ in size
    (or one too short for ``num_frames``) — checked before any feature is computed."""
    shapes = {f: clip_shape(f) for f in files}
    first = files[0]
    t0, h0, w0 = shapes[first]
    for f, (t, h, w) in shapes.items():
        if (h, w) != (h0, w0):
            raise UserError(f"the clips differ in size: {first.name} is {h0}x{w0} but {f.name} is {h}x{w}; put "
                            f"videos of one size in the folder (--fake reads every video_* file, or every video)")
        if num_frames is not None and t < num_frames:
            raise UserError(f"video {f} has {t} frames; fewer than --num-frames {num_frames}")
    return min(t for t, _, _ in shapes.values()), h0, w0


def fit_size(videos: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Short side resized (bilinear) then center crop to ``size``; ``(B, C, T, H, W)``."""
    b, c, t, h, w = videos.shape
    if (h, w) == tuple(size):
        return videos
    scale = max(size[0] / h, size[1] / w)
    nh, nw = max(size[0], round(h * scale)), max(size[1], round(w * scale))
    frames = fold_frames(videos).float()
    frames = F.interpolate(frames, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    top, left = (nh - size[0]) // 2, (nw - size[1]) // 2
    frames = frames[:, :, top:top + size[0], left:left + size[1]]
    return unfold_frames(frames, t)


def folder_batches(files: Sequence[Path], num_frames: int, stride: int = 1, size: Optional[tuple[int, int]] = None,
                   batch_size: int = 8, starts: Optional[Sequence[int]] = None) -> Iterator[torch.Tensor]:
    """Clips of ``num_frames`` frames (every ``stride``-th) of each file from its first frame (or from
    ``starts[k]`` for file k), in batches."""
    from vfusion.utils.video import read_video

    need = (num_frames - 1) * stride + 1
    batch: list[torch.Tensor] = []
    for k, path in enumerate(files):
        try:
            video = read_video(path)
        except Exception as err:  # noqa: BLE001 - decoder errors have many types
            raise UserError(f"cannot read video {path}: {err}") from err
        first = int(starts[k]) if starts is not None else 0
        if video.shape[1] < first + need:
            raise UserError(f"video {path} has {video.shape[1]} frames; {num_frames} frames at stride {stride} "
                            f"from frame {first} need {first + need} (lower --num-frames or --real-stride)")
        clip = video[:, first:first + need:stride]
        if clip.shape[0] == 1:
            clip = clip.repeat(3, 1, 1, 1)
        if size is not None:
            clip = fit_size(clip[None], size)[0]
        batch.append(clip)
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


def dataset_subsets(data_cfg, split: str, sizes: Sequence[int], seed: int = SUBSET_SEED):
    """The real dataset and disjoint index subsets of the given sizes (a seeded permutation)."""
    from vfusion.data import build_dataset
    if data_cfg.get("cache") == "latents":  # metrics see pixels, never VAE latents
        from omegaconf import OmegaConf

        data_cfg = OmegaConf.merge(data_cfg, {"cache": "none"})
    dataset = build_dataset(data_cfg, split=split, train=False, seed=seed)
    n = len(dataset)
    if n < len(sizes):
        raise UserError(f"the {data_cfg.dataset} '{split}' split has {n} clips; not enough to evaluate")
    perm = np.random.default_rng(seed).permutation(n)
    want = list(sizes)
    if sum(want) > n:  # a small dataset: equal shares of what there is
        share = n // len(want)
        want = [min(s, share) for s in want]
    out, start = [], 0
    for s in want:
        out.append(perm[start:start + s].tolist())
        start += s
    return dataset, out


def dataset_batches(dataset, indices: Sequence[int], batch_size: int, num_workers: int = 0,
                    with_labels: bool = False) -> Iterator:
    """Batches of the clips ``indices`` in order; ``with_labels``: ``(clips, labels)`` pairs, from the same read
    (labels None for a dataset without them)."""
    from torch.utils.data import DataLoader, Subset

    loader = DataLoader(Subset(dataset, list(indices)), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, drop_last=False)
    for item in loader:
        pair = isinstance(item, (list, tuple))
        clips = item[0] if pair else item
        yield (clips, item[1] if pair else None) if with_labels else clips


def labelled_subset(data_cfg, split: str, num: int, batch_size: int = 16):
    """``num`` real clips of ``split`` (the seeded subset evaluation uses), ``(N, C, T, H, W)`` in [-1, 1], with
    their labels ``(N,)`` and the dataset's class names, each clip read once."""
    dataset, (indices,) = dataset_subsets(data_cfg, split, [num])
    batches = list(dataset_batches(dataset, indices, batch_size=batch_size, with_labels=True))
    clips = torch.cat([c for c, _ in batches])
    labels = torch.cat([torch.as_tensor(lab) for _, lab in batches])
    return clips, labels, list(dataset.class_names)
