"""Benchmark: the project's video models against a peer architecture at matched size, side by side.

Models, all at the same batch, frame count and resolution (default: the main job's, 4 x 16 frames at
32 px), each timed in its own process (so each one's peak memory is its own):

- ``videofusion``, ``video_unet``, ``dit``: built by the project (``build_model``) from
  ``--config`` (default ``configs/embedded.yaml``: the main job's sizes; the video UNet with the
  temporal convolutions of the studies, the DiT at hidden 128, depth 6, 4 heads: within 10% of
  VideoFusion's parameters);
- ``unet3d``: diffusers' ``UNet3DConditionModel`` (the ModelScope text-to-video architecture:
  spatial convolutions and attention with temporal convolution and attention in every block),
  its widths scaled so its parameter count is the closest to VideoFusion's of a small grid
  (``--unet3d-widths``), conditioned through a one-token ``encoder_hidden_states``.

The ``video-diffusion-pytorch`` package's ``Unet3D`` is not included: it imports ``torchvision`` at
module level, which on PyPI pulls a CUDA build of torch of several GB over the project's CPU build.

Per model: parameters, a training step (forward, MSE to a random target, backward, AdamW step;
median of ``--iters`` after a warm-up), its peak memory (CUDA ``max_memory_allocated``, or on the
CPU the peak RSS growth of the process during the steps), and one denoising step of sampling
(forward without gradients). Rounds alternate the models so machine load hits them alike; the
median over rounds is reported with the ratio to VideoFusion.

    python experiments/bench_peers.py --rounds 2 --json experiments/results/bench_peers.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

MODELS = ("videofusion", "video_unet", "dit", "unet3d")
DIT_OVERRIDES = ["model.dit.hidden_size=128", "model.dit.depth=6", "model.dit.num_heads=4"]
VUNET_OVERRIDES = ["model.video_unet.temporal_layers=conv"]  # as in the studies: 1.55 M against VideoFusion's 1.45 M


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _unet3d(width: int, channels: int, size: int, cond_dim: int):
    from diffusers import UNet3DConditionModel

    return UNet3DConditionModel(
        sample_size=size, in_channels=channels, out_channels=channels, layers_per_block=1,
        block_out_channels=(width, 2 * width, 2 * width),
        down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=cond_dim, attention_head_dim=8, norm_num_groups=8)


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def build(name: str, args):
    """(model, forward(x, t)) for one of MODELS."""
    from vfusion.config import load_config
    from vfusion.models.registry import build_model
    from vfusion.models.spec import experiment_spec

    torch.manual_seed(0)
    if name == "unet3d":
        model = _unet3d(args.unet3d_width, 3, args.size, 32)
        hidden = torch.randn(args.batch, 1, 32)
        return model, lambda x, t: model(x, t, encoder_hidden_states=hidden).sample
    extra = {"dit": DIT_OVERRIDES, "video_unet": VUNET_OVERRIDES}.get(name, [])
    cfg = load_config(args.config, ["model.base.pretrained=null", f"model.name={name}", f"data.num_frames={args.frames}",
                                    f"data.resolution={args.size}", *extra, *args.overrides])
    model = build_model(cfg, experiment_spec(cfg, 3, args.size, args.frames, 0))
    return model, lambda x, t: model(x, t, None)


def single(name: str, args) -> dict:
    device = torch.device(args.device)
    model, fwd = build(name, args)
    model.to(device).train()
    x = torch.randn(args.batch, 3, args.frames, args.size, args.size, device=device)
    target = torch.randn_like(x)
    t = torch.randint(0, 1000, (args.batch,), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base_mem = torch.cuda.memory_allocated() if device.type == "cuda" else _rss_mb()
    train = []
    for _ in range(args.warmup + args.iters):
        sync()
        start = time.perf_counter()
        loss = (fwd(x, t) - target).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        train.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() - base_mem) / 2**20 if device.type == "cuda" else _rss_mb() - base_mem
    model.eval()
    sample = []
    with torch.no_grad():
        for _ in range(args.warmup + args.iters):
            sync()
            start = time.perf_counter()
            fwd(x, t)
            sync()
            sample.append(time.perf_counter() - start)
    return {"model": name, "params": _params(model), "train_step_s": statistics.median(train[args.warmup:]),
            "sample_step_s": statistics.median(sample[args.warmup:]), "peak_mem_mb": peak}


def closest_unet3d_width(args, target: int) -> int:
    widths = [int(w) for w in args.unet3d_widths.split(",")]
    return min(widths, key=lambda w: abs(_params(_unet3d(w, 3, args.size, 32)) - target))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/embedded.yaml")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--unet3d-widths", default="16,24,32,40,48",
                   help="first-level widths tried for UNet3DConditionModel (levels: w, 2w, 2w)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default=None)
    p.add_argument("--single", choices=MODELS, help=argparse.SUPPRESS)
    p.add_argument("--unet3d-width", type=int, default=32, help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help="key=value overrides of the project's models")
    a = p.parse_args(argv)
    if a.single:
        print(json.dumps(single(a.single, a)))
        return 0
    from vfusion.utils.quiet import quiet_third_party

    quiet_third_party()
    vf_params = _params(build("videofusion", a)[0])
    a.unet3d_width = closest_unet3d_width(a, vf_params)
    runs: dict[str, list[dict]] = {m: [] for m in MODELS}
    for r in range(a.rounds):
        for m in MODELS:
            cmd = [sys.executable, __file__, "--single", m, "--config", a.config, "--batch", str(a.batch),
                   "--frames", str(a.frames), "--size", str(a.size), "--iters", str(a.iters), "--warmup", str(a.warmup),
                   "--device", a.device, "--unet3d-width", str(a.unet3d_width), *a.overrides]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            runs[m].append(json.loads(out))
            print(f"round {r + 1}/{a.rounds} {m:<12} {runs[m][-1]['train_step_s'] * 1e3:8.1f} ms/train step", flush=True)
    med = {m: {k: statistics.median(x[k] for x in v) for k in ("train_step_s", "sample_step_s", "peak_mem_mb")}
           | {"params": v[0]["params"]} for m, v in runs.items()}
    ref = med["videofusion"]
    where = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nbatch {a.batch} x {a.frames} frames at {a.size} px, {where}; medians of {a.rounds} rounds "
          f"(UNet3DConditionModel widths {a.unet3d_width}, {2 * a.unet3d_width}, {2 * a.unet3d_width})")
    print(f"{'model':<12} {'params [M]':>10} {'train [ms]':>11} {'x VF':>6} {'sample [ms]':>12} {'x VF':>6} "
          f"{'peak [MB]':>10} {'x VF':>6}")
    for m, v in med.items():
        print(f"{m:<12} {v['params'] / 1e6:>10.3f} {v['train_step_s'] * 1e3:>11.1f} "
              f"{v['train_step_s'] / ref['train_step_s']:>6.2f} {v['sample_step_s'] * 1e3:>12.1f} "
              f"{v['sample_step_s'] / ref['sample_step_s']:>6.2f} {v['peak_mem_mb']:>10.1f} "
              f"{v['peak_mem_mb'] / max(ref['peak_mem_mb'], 1e-9):>6.2f}")
    if a.json:
        from vfusion.utils.io import atomic_write_json

        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(a.json), {"device": where, "batch": a.batch, "frames": a.frames, "size": a.size,
                                         "rounds": a.rounds, "iters": a.iters, "unet3d_width": a.unet3d_width,
                                         "median": med, "runs": runs, "command": "python experiments/bench_peers.py "
                                         + " ".join(argv if argv is not None else sys.argv[1:])})
    return 0


if __name__ == "__main__":
    sys.exit(main())
