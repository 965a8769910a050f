"""Data-path throughput: UCF-like 320x240 XviD AVIs -> 16 frames at stride 3 -> 128x128 clips.

Prints clips/s through ``vfusion.data.build_dataloader`` (default worker count, training
sampling: random start + flip) from decoding, and the same from the uint8 clip cache
(``data.cache=clips``), plus the cache build time. With ``--train-config`` it also measures, in
the same run and on the same machine, the clips/s that experiment's training consumes (optimizer
steps of its model on random clips of its shape and batch, loss + backward + AdamW + EMA, no data
loading) and prints loader / training, the head-room of the data path (target: at least 3x).
Writes the figures to ``experiments/results/bench_data.json``. Not a test: numbers depend on the machine.

    python experiments/bench_data.py [--videos 24] [--frames 180] [--gop 12] [--seconds 20]
    python experiments/bench_data.py --train-config configs/ucf101.yaml
    python experiments/bench_data.py --config configs/embedded.yaml --batch-size 8 --out ...
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np


def make_videos(root: Path, n: int, frames: int, gop: int) -> None:
    """UCF-101 layout: ``n`` videos over 4 classes, moving textured content, XviD 320x240."""
    from vfusion.data.embedded import write_xvid_avi

    if (root / "done.json").is_file() and json.loads((root / "done.json").read_text()) == [n, frames, gop]:
        return
    rng = np.random.default_rng(0)
    videos, lists = root / "UCF-101", root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    classes = ["BenchA", "BenchB", "BenchC", "BenchD"]
    train = []
    yy, xx = np.mgrid[0:240, 0:320].astype(np.float32)
    for i in range(n):
        cls = classes[i % 4]
        (videos / cls).mkdir(parents=True, exist_ok=True)
        # a large low-pass random texture panned across the frame, plus a moving disk
        tex = rng.normal(size=(60, 80, 3)).astype(np.float32)
        tex = np.kron(tex, np.ones((8, 8, 1), np.float32))                     # (480, 640, 3)
        out = np.empty((frames, 240, 320, 3), np.uint8)
        vx, vy = rng.uniform(-2, 2, 2)
        for t in range(frames):
            ox, oy = int(160 + vx * t) % 320, int(120 + vy * t) % 240
            img = 128 + 40 * tex[oy:oy + 240, ox:ox + 320]
            d = (xx - (160 + 100 * np.sin(t / 15))) ** 2 + (yy - 120) ** 2 < 900
            img[d] = (220, 60, 60)
            out[t] = np.clip(img, 0, 255)
        name = f"v_{cls}_g{i // 4 + 1:02d}_c01.avi"
        write_xvid_avi(videos / cls / name, out, gop=gop, quality=4)
        train.append(f"{cls}/{name} {i % 4 + 1}\n")
    (lists / "classInd.txt").write_text("".join(f"{k + 1} {c}\n" for k, c in enumerate(classes)))
    (lists / "trainlist01.txt").write_text("".join(train))
    (lists / "testlist01.txt").write_text(train[0].split()[0] + "\n")
    (root / "done.json").write_text(json.dumps([n, frames, gop]))


def throughput(loader, seconds: float) -> tuple[float, int]:
    """Clips per second after the first batch (worker start-up excluded)."""
    it = iter(loader)
    next(it)
    clips, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        try:
            video, _ = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        clips += video.shape[0]
    return clips / (time.perf_counter() - start), clips


def training_clips_per_s(config: str, steps: int = 6, warmup: int = 2, overrides=()) -> tuple[float, str]:
    """Clips per second that ``config``'s training consumes: its model's optimizer steps on random clips of
    its batch shape (loss, backward, AdamW, EMA; no data loading), median step after a warm-up."""
    import statistics

    import torch

    from vfusion.experiment import load_experiment_config
    from vfusion.training.runner import build_module

    cfg = load_experiment_config(config, ["model.base.pretrained=null", "train.accelerator=cpu", *overrides])
    b, t, r = int(cfg.data.batch_size), int(cfg.data.num_frames), int(cfg.data.resolution)
    spec = {"in_channels": 3, "sample_size": r, "num_frames": t, "num_classes": 101 if cfg.data.class_conditional else 0,
            "class_names": []}
    torch.manual_seed(0)
    module = build_module(cfg, spec)
    module.train()
    opt = module.configure_optimizers()["optimizer"]
    x, y = torch.rand(b, 3, t, r, r) * 2 - 1, torch.zeros(b, dtype=torch.long)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = module.diffusion_loss(x, y)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if module.ema is not None:
            module.ema.step(module.model.parameters())
        times.append(time.perf_counter() - start)
    step = statistics.median(times[warmup:])
    return b / step, f"{config}: {cfg.model.name}, batch {b} x {t} frames at {r} px, {step:.2f} s/step"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="/tmp/vfusion_bench_data")
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--frames", type=int, default=180, help="frames per video (UCF-101 mean is about 186)")
    parser.add_argument("--gop", type=int, default=12, help="keyframe interval of the written XviD files")
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring time per path")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--config", default=None, help="measure this experiment's data section instead "
                        "(e.g. configs/embedded.yaml)")
    parser.add_argument("--train-config", default=None,
                        help="also measure the clips/s this experiment's training consumes (e.g. configs/ucf101.yaml)")
    parser.add_argument("--train-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides of --train-config (e.g. data.batch_size=2 where batch 8 does not fit in memory: "
                             "the clips/s per step scale with the batch)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_data.json"))
    args = parser.parse_args()

    import torch

    from vfusion.experiment import resolve_config
    from vfusion.data import build_dataloader, default_num_workers, ensure_cache

    warnings.simplefilter("ignore")
    if args.config:                      # an experiment's own data section (e.g. the embedded default)
        from omegaconf import OmegaConf

        from vfusion.experiment import load_experiment_config

        data = OmegaConf.to_container(load_experiment_config(args.config).data)
        data.update(cache="none", cache_dir=str(Path(args.workdir) / "cache_config"), batch_size=args.batch_size)
        clip_desc = (f"{args.config}: {data['dataset']}, {data['num_frames']} frames, stride {data['frame_stride']}, "
                     f"-> {data['resolution']}x{data['resolution']}")
        print(clip_desc)
    else:
        root = Path(args.workdir) / f"ucf_like_gop{args.gop}"
        t0 = time.perf_counter()
        make_videos(root, args.videos, args.frames, args.gop)
        print(f"videos: {args.videos} x {args.frames} frames, 320x240 XviD, gop {args.gop} "
              f"({time.perf_counter() - t0:.1f} s to prepare) at {root}")
        data = {"dataset": "ucf101", "root": str(root), "num_frames": 16, "frame_stride": 3, "resolution": 128,
                "batch_size": args.batch_size, "cache_dir": str(Path(args.workdir) / f"cache_gop{args.gop}"),
                "num_workers": -1, "random_flip": True}
        clip_desc = f"UCF-like 320x240 XviD (gop {args.gop}), 16 frames, stride 3 -> 128x128"
    cfg = resolve_config({"name": "bench", "data": data}).data
    workers = default_num_workers(cfg)
    print(f"DataLoader: batch {args.batch_size}, {workers} workers (data.num_workers=-1), {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}")

    decode, n_decode = throughput(build_dataloader(cfg, train=True, seed=0), args.seconds)
    print(f"decode path : {decode:8.1f} clips/s  ({n_decode} clips)")

    cache_cfg = resolve_config({"name": "bench", "data": {**data, "cache": "clips"}}).data
    t0 = time.perf_counter()
    path = ensure_cache(cache_cfg, "train", progress=False)
    build_s = time.perf_counter() - t0
    cached, n_cached = throughput(build_dataloader(cache_cfg, train=True, seed=0), args.seconds)
    print(f"clip cache  : {cached:8.1f} clips/s  ({n_cached} clips; built in {build_s:.1f} s at {path})")
    print(f"cache / decode: {cached / decode:.1f}x")
    train = {}
    if args.train_config:
        consumed, what = training_clips_per_s(args.train_config, overrides=args.train_set)
        print(f"training    : {consumed:8.2f} clips/s  ({what})")
        print(f"decode / training: {decode / consumed:.1f}x (target >= 3x)")
        train = {"train_config": args.train_config, "train_overrides": list(args.train_set), "train_clips_per_s": round(consumed, 3), "train_what": what,
                 "decode_over_train": round(decode / consumed, 1)}
    result = {
        "command": " ".join([Path(sys.executable).name] + sys.argv), "videos": args.videos, "frames": args.frames,
        "gop": args.gop, "clip": clip_desc, "batch_size": args.batch_size,
        "workers": workers, "cpus": os.cpu_count(), "platform": platform.platform(),
        "decode_clips_per_s": round(decode, 1), "cache_clips_per_s": round(cached, 1),
        "cache_speedup": round(cached / decode, 1), "cache_build_s": round(build_s, 1), **train,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    from vfusion.utils.io import atomic_write_json

    atomic_write_json(args.out, result)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
