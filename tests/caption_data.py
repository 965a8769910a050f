"""Small captioned video datasets on disk, in the three layouts ``vfusion.data.captions`` reads:
sidecar ``NAME.txt`` files (video2dataset's WebVid layout), a ``captions.csv``, and WebVid's metadata CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from vfusion.utils.video import write_mp4

CAPTIONS = ("a red ball bouncing", "a blue square sliding to the left", "white clouds drifting",
            "a yellow moon rising over the sea")


def clip(seed: int, frames: int = 6, size: int = 32) -> torch.Tensor:
    """A smooth seeded clip (C, T, H, W) in [-1, 1] that changes from frame to frame (decord reads these
    libx264 files back only at widths that are multiples of 32)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(3, 1, 4, 4, generator=g) * 2 - 1
    image = torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)
    shift = torch.linspace(0, 0.5, frames).view(1, frames, 1, 1)
    return (image.squeeze(1).unsqueeze(1) + shift).clamp(-1, 1)


def sidecar_tree(root: Path, n: int = 4) -> Path:
    """``00000/00000000k.mp4`` with ``00000000k.txt`` beside each."""
    for k in range(n):
        video = root / "00000" / f"{k:09d}.mp4"
        write_mp4(video, clip(k))
        video.with_suffix(".txt").write_text(CAPTIONS[k % len(CAPTIONS)] + "\n")
    return root


def csv_tree(root: Path, n: int = 4) -> Path:
    """``videos/clip_k.mp4`` and ``captions.csv`` (video,caption) at the root."""
    rows = []
    for k in range(n):
        write_mp4(root / "videos" / f"clip_{k}.mp4", clip(k))
        rows.append({"video": f"videos/clip_{k}.mp4", "caption": CAPTIONS[k % len(CAPTIONS)]})
    with open(root / "captions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["video", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def webvid_tree(root: Path, n: int = 4, name: str = "results_2M_train.csv") -> Path:
    """WebVid's metadata CSV (its real column order) and ``<page_dir>/<videoid>.mp4``."""
    rows = []
    for k in range(n):
        page = f"{1000 + k // 2:06d}_{1000 + k // 2 + 1:06d}"
        vid = 31353427 + k
        write_mp4(root / page / f"{vid}.mp4", clip(k))
        rows.append({"videoid": vid, "contentUrl": f"https://example.invalid/{vid}.mp4", "duration": "PT00H00M10S",
                     "page_dir": page, "name": CAPTIONS[k % len(CAPTIONS)]})
    root.mkdir(parents=True, exist_ok=True)
    with open(root / name, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["videoid", "contentUrl", "duration", "page_dir", "name"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def run_overrides(tmp_path, sd, root, dataset="captions", *extra):
    """A tiny captioned run on the text base folder ``sd`` (16 px, 4 frames, 2 steps) in ``tmp_path/run``."""
    return [f"data.dataset={dataset}", f"data.root={root}", "data.num_frames=4", "data.resolution=16",
            "data.batch_size=2", "data.num_workers=0", f"data.cache_dir={tmp_path / 'cache'}",
            "model.residual.block_out_channels=[8,8]", "model.residual.norm_num_groups=4",
            "model.residual.frame_embed_dim=8", f"model.base.pretrained={sd}", "diffusion.prediction_type=null",
            "train.loss_weighting=none", "sample.sampler=ddim", "sample.guidance_scale=1.0",
            "train.progress_bar=false", "train.max_minutes=0", "train.max_steps=2", "train.log_every_n_steps=1",
            "train.sample_every_n_steps=0", "sample.steps=2", "sample.batch_size=2", "sample.num_videos=2",
            f"run_dir={tmp_path / 'run'}", *extra]
