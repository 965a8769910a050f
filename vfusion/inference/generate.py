"""Batched generation from a :class:`VideoFusionPipeline`, and the samples folder it writes.

Determinism: batch ``i`` of a generation uses a generator seeded ``seed + i``, and video j
gets class j mod K, so any prefix of the videos is the same whatever ``num_videos`` is,
and ``pipe(batch_size=B, generator=torch.Generator().manual_seed(seed))`` is the first batch.

A samples folder holds ``video_*.mp4`` (one per video), ``grid.gif``, ``filmstrip.png``,
``videos.npy`` (every video's exact uint8 frames, ``(N, T, H, W, C)``: the lossless copy
evaluation reads) and ``samples.json`` (how they were made). Evaluation reuses the folder's
videos when ``samples.json`` matches what it would generate, so a run is sampled once. The folder is
written beside its place and moved there whole when finished (:func:`vfusion.utils.io.staged_dir`): an
interrupted sampling leaves the previous folder, or none, never a part of one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from vfusion.rundir import METRICS_FILE, PIPELINE_INDEX, SAMPLES_FILMSTRIP, SAMPLES_GRID, RunDir, SampleSettings
from vfusion.rundir import SAMPLES_FRAMES as FRAMES_FILE
from vfusion.rundir import SAMPLES_MANIFEST as MANIFEST

# what a samples folder may hold, metrics from `vfusion evaluate --fake DIR` included: a sampling that
# replaces the folder refuses any other file instead of deleting it
SAMPLE_FILES = ("video_*.mp4", FRAMES_FILE, SAMPLES_GRID, SAMPLES_FILMSTRIP, MANIFEST, METRICS_FILE)


def check_output_dir(out_dir: str | Path, allowed: tuple[str, ...] = SAMPLE_FILES, flag: str = "--out") -> Path:
    """``out_dir`` when writing there replaces nothing but earlier outputs (the ``allowed`` name patterns);
    else a :class:`UserError` naming a file it would lose."""
    from vfusion.errors import UserError

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{flag} {out_dir} is a file; give a folder")
    other = sorted(p.name for p in out_dir.iterdir() if not any(p.match(a) for a in allowed)) \
        if out_dir.is_dir() else []
    if other:
        raise UserError(f"{flag} {out_dir} holds {other[0]!r}{f' and {len(other) - 1} more' if len(other) > 1 else ''},"
                        f" which is not an earlier output, and the folder is replaced whole; give a new or empty "
                        f"folder")
    return out_dir


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_pipeline(path: str | Path, device=None):
    """A pipeline from a pipeline folder or a run directory (its ``pipeline/``), on ``device``."""
    import logging

    from vfusion.inference.pipeline import VideoFusionPipeline

    path = Path(path)
    if not (path / PIPELINE_INDEX).is_file():
        run = RunDir(path)
        if run.pipeline_is_stale():
            logging.getLogger(__name__).warning(
                "%s: checkpoints/last.ckpt is newer than pipeline/; sampling the pipeline (run `vfusion export "
                "--run %s` to refresh it from the checkpoint)", path, path)
        path = run.pipeline_path()
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()  # a bar for loading three small folders is noise
    try:
        pipe = VideoFusionPipeline.from_pretrained(str(path))
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
        from vfusion.errors import UserError

        raise UserError(f"cannot load the pipeline at {path}: {str(err).splitlines()[0]}") from err
    finally:
        diffusers_logging.enable_progress_bar()
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(torch.device(device) if device is not None else default_device())


def generate(pipe, settings: SampleSettings, progress: bool = True
             ) -> Iterator[tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """Yield ``(videos (B, C, T, H, W) in [-1, 1] on the CPU, labels)`` until ``settings.num_videos`` are made."""
    from tqdm.auto import tqdm

    n, bs = settings.num_videos, settings.batch_size
    batches = -(-n // bs)
    bar = tqdm(total=batches * settings.steps, desc=f"sampling {n} videos ({settings.sampler})", unit="step",
               disable=not progress)
    done, i = 0, 0
    device = pipe.device
    try:
        while done < n:
            b = min(bs, n - done)
            gen = torch.Generator(device=device).manual_seed(settings.seed + i)
            out = pipe(batch_size=b, num_inference_steps=settings.steps, sampler=settings.sampler,
                       guidance_scale=settings.guidance_scale, generator=gen, output_type="pt", start_index=done,
                       progress=False, callback=lambda _s: bar.update(1), prompt=settings.video_prompts(done, b),
                       negative_prompt=settings.negative_prompt)
            yield out.frames, out.class_labels
            done += b
            i += 1
    finally:
        bar.close()


def to_uint8(videos: torch.Tensor) -> np.ndarray:
    """``(B, C, T, H, W)`` in [-1, 1] -> ``(B, T, H, W, C)`` uint8, the levels a video file holds."""
    from vfusion.utils.video import to_uint8_frames

    return np.stack([to_uint8_frames(v) for v in videos])


def from_uint8(frames: np.ndarray) -> torch.Tensor:
    """Inverse of :func:`to_uint8` (up to the quantisation)."""
    from vfusion.utils.video import from_uint8_frames

    return torch.stack([from_uint8_frames(f) for f in frames])


def write_previews(out_dir: str | Path, videos: torch.Tensor, fps: int) -> None:
    """``grid.gif`` (the first 64 of ``videos`` (B, C, T, H, W) in [-1, 1], tiled) and ``filmstrip.png``
    (the first 16, a row each) in ``out_dir``."""
    from vfusion.utils.video import filmstrip, make_grid_frames, write_gif, write_png

    out_dir = Path(out_dir)
    write_gif(out_dir / SAMPLES_GRID, make_grid_frames(videos[:64]), fps=fps, scale=2)
    write_png(out_dir / SAMPLES_FILMSTRIP, filmstrip(videos[:16]))


def write_videos(out_dir: str | Path, videos: torch.Tensor, fps: int,
                 labels: Optional[list[int]] = None) -> list[Path]:
    """Videos held in memory, (B, C, T, H, W) in [-1, 1], as a samples folder writes them (without its
    manifest): ``video_*.mp4`` per video, ``videos.npy`` (uint8 (B, T, H, W, C)), ``grid.gif`` and
    ``filmstrip.png``. Returns the mp4 paths."""
    from vfusion.utils.io import atomic_path
    from vfusion.utils.video import save_videos

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = save_videos(videos, out_dir, fps=fps, labels=labels)
    with atomic_path(out_dir / FRAMES_FILE) as tmp:
        np.save(tmp, to_uint8(videos))
    write_previews(out_dir, videos, fps)
    return paths


def write_samples(pipe, out_dir: str | Path, settings: SampleSettings, progress: bool = True,
                  describe: Optional[dict] = None) -> tuple[Path, float, list[Path]]:
    """Per-video mp4 files, ``videos.npy``, ``grid.gif``, ``filmstrip.png`` and ``samples.json``.

    Returns ``(out_dir, seconds, mp4 paths)``. The folder is refused before sampling when it holds
    anything else (:func:`check_output_dir`), and replaced whole once every file is written.
    """
    from vfusion.utils.io import atomic_write_json, staged_dir
    from vfusion.utils.video import save_videos

    out_dir = check_output_dir(out_dir)
    start = time.perf_counter()
    shown, names, done = [], [], 0
    vc = pipe.video_config
    with staged_dir(out_dir) as tmp:
        store = None
        for videos, labels in generate(pipe, settings, progress=progress):
            frames = to_uint8(videos)
            if store is None:
                store = np.lib.format.open_memmap(tmp / FRAMES_FILE, mode="w+", dtype=np.uint8,
                                                  shape=(settings.num_videos,) + frames.shape[1:])
            store[done:done + len(frames)] = frames
            names += [p.name for p in save_videos(videos, tmp, fps=settings.fps, start_index=done,
                                                  labels=labels.tolist() if labels is not None else None)]
            done += videos.shape[0]
            if sum(v.shape[0] for v in shown) < 64:
                shown.append(videos)
        store.flush()
        del store
        write_previews(tmp, torch.cat(shown), fps=settings.fps)
        secs = time.perf_counter() - start
        given = settings.video_prompts(0, done)
        labels = [int(i) % int(vc["num_classes"]) for i in range(done)] \
            if vc.get("num_classes") and given is None else None
        extra = {"video_prompts": given} if given is not None else {}
        atomic_write_json(tmp / MANIFEST, {**settings.describe(), **extra, "frames_file": FRAMES_FILE, "labels": labels,
                                           "model": vc.get("model"), "seconds": round(secs, 3),
                                           **(describe or {})})
    return out_dir, secs, [out_dir / name for name in names]


def matching_manifest(out_dir: str | Path, settings: SampleSettings, newer_than: Optional[Path] = None
                      ) -> Optional[dict]:
    """The folder's ``samples.json`` when it holds at least ``settings.num_videos`` videos made with these
    settings (and, with ``newer_than``, after that file was written); else None."""
    manifest_path = Path(out_dir) / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if newer_than is not None and Path(newer_than).is_file() and \
            manifest_path.stat().st_mtime < Path(newer_than).stat().st_mtime:
        return None
    same = all(manifest.get(k) == v for k, v in settings.describe().items() if k != "num_videos")
    complete = int(manifest.get("num_videos", 0)) >= settings.num_videos and \
        (Path(out_dir) / manifest.get("frames_file", FRAMES_FILE)).is_file()
    return manifest if same and complete else None


def saved_sample_batches(out_dir: str | Path, settings: SampleSettings,
                         newer_than: Optional[Path] = None
                         ) -> Optional[Iterator[tuple[torch.Tensor, Optional[torch.Tensor]]]]:
    """The first ``settings.num_videos`` videos of a samples folder as ``(videos, labels)`` batches, as
    :func:`generate` yields them, when its manifest says they were made with the same sampler, steps,
    guidance, seed and batch size; else None."""
    manifest = matching_manifest(out_dir, settings, newer_than=newer_than)
    if manifest is None:
        return None
    frames = np.load(Path(out_dir) / manifest["frames_file"], mmap_mode="r")

    labels = manifest.get("labels")

    def batches():
        for s in range(0, settings.num_videos, settings.batch_size):
            e = min(s + settings.batch_size, settings.num_videos)
            yield (from_uint8(np.array(frames[s:e])),  # a writable copy
                   torch.tensor(labels[s:e]) if labels is not None else None)

    return batches()


def write_run_samples(run_dir: str | Path, out_dir: str | Path, settings: SampleSettings, device=None,
                      progress: bool = True) -> tuple[Path, float, list[Path]]:
    """:func:`write_samples` from a run's pipeline (the study harness's hook)."""
    return write_samples(load_pipeline(RunDir(run_dir).path, device), out_dir, settings, progress=progress)
