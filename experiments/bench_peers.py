"""Benchmark: the project's video models against published video architectures at matched FLOPs per step.

All models see the same batch, frame count and resolution (default: the main job's, 4 x 16 frames at
32 px). The project's models are built from ``--config`` (``videofusion``, ``video_unet``, ``dit``; the
sizes of the studies). Each peer's width is the one of a small grid whose training-step FLOPs come
closest to VideoFusion's (counted on one clip, at the run's shape):

- ``unet3d``: diffusers' ``UNet3DConditionModel`` (ModelScope text-to-video: temporal convolution and
  attention in every block);
- ``unet_motion``: diffusers' ``UNetMotionModel`` (AnimateDiff: a 2D UNet with motion modules);
- ``latte``: diffusers' ``LatteTransformer3DModel`` with its text cross-attention and patch 2 (the
  project's DiT is the same class, class-conditioned, patch 4);
- ``vdp_unet3d``: video-diffusion-pytorch's ``Unet3D`` (Ho et al.'s video diffusion UNet: factorised
  space-time attention), installed beside the CPU torch without pulling a CUDA one::

      pip install --no-deps video-diffusion-pytorch==0.7.0 einops einops-exts rotary-embedding-torch

  (it imports torchvision for its data helpers only; ``bench_common.absent_torchvision`` stands in when
  torchvision cannot load).

Per model: parameters, counted FLOPs of a training and of a sampling step, a training step (forward,
MSE, backward, AdamW) and a sampling step (one forward without gradients), each the median of
``--iters`` after a warm-up, and the peak memory (each model in its own process). Rounds alternate the
models; medians over rounds, with ratios to VideoFusion.

    python experiments/bench_peers.py --rounds 2 --json experiments/results/bench_peers.json
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common, also when loaded by path
from bench_common import PEERS, PROJECT_MODELS, build, in_subprocess, machine, train_flops  # noqa: E402

WIDTHS = {"unet3d": (8, 16, 24, 32, 40), "unet_motion": (8, 16, 24, 32, 40), "latte": (32, 64, 96, 128, 192, 256),
          "vdp_unet3d": (8, 16, 24, 32, 40)}


def installed_peers() -> list[str]:
    if importlib.util.find_spec("video_diffusion_pytorch") is None:
        print("vdp_unet3d left out: video-diffusion-pytorch is not installed (install command in this "
              "script's docstring)", file=sys.stderr)
        return [m for m in PEERS if m != "vdp_unet3d"]
    return list(PEERS)


def matched_width(peer: str, target: int, frames: int, size: int) -> tuple[int, int]:
    """(width, FLOPs per clip) of the grid's width whose training-step FLOPs per clip are closest to ``target``."""
    counts = {}
    for w in WIDTHS[peer]:
        model, fwd = build(peer, w, "", frames, size)
        counts[w] = train_flops(model, fwd, frames, size)
        if counts[w] > 2 * target:
            break
    width = min(counts, key=lambda w: abs(counts[w] - target))
    return width, counts[width]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/embedded.yaml")
    p.add_argument("--models", default=None, help="comma-separated (default: the project's models and every peer "
                                                    "that is installed)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    from vfusion.utils.quiet import quiet_third_party

    quiet_third_party()
    models = a.models.split(",") if a.models else [*PROJECT_MODELS, *installed_peers()]
    vf, vf_fwd = build("videofusion", 0, a.config, a.frames, a.size)
    target = train_flops(vf, vf_fwd, a.frames, a.size)
    widths = {}
    for m in models:
        if m in PEERS:
            widths[m], flops = matched_width(m, target, a.frames, a.size)
            print(f"{m:<12} width {widths[m]:>4}: {flops / 1e9:7.2f} GFLOP per clip and step "
                  f"(VideoFusion {target / 1e9:.2f})", flush=True)
    runs: dict[str, list[dict]] = {m: [] for m in models}
    for r in range(a.rounds):
        for m in models:
            runs[m].append(in_subprocess({"model": m, "width": widths.get(m, 0), "config": a.config,
                                          "batch": a.batch, "frames": a.frames, "size": a.size, "iters": a.iters,
                                          "warmup": a.warmup, "device": a.device}))
            print(f"round {r + 1}/{a.rounds} {m:<12} {runs[m][-1]['train_step_s'] * 1e3:8.1f} ms/train step", flush=True)
    keys = ("train_step_s", "sample_step_s", "peak_mem_mb")
    med = {m: {**v[0], **{k: statistics.median(x[k] for x in v) for k in keys}} for m, v in runs.items()}
    for v in med.values():  # the grid's widths cannot match FLOPs exactly: compare per FLOP too
        v["train_flops_per_s"] = v["train_flops"] / v["train_step_s"]
        v["train_step_s_at_videofusion_flops"] = v["train_step_s"] * target * a.batch / v["train_flops"]
    ref = med.get("videofusion") or next(iter(med.values()))
    print(f"\nbatch {a.batch} x {a.frames} frames at {a.size} px, {machine(a.device)}; medians of {a.rounds} rounds")
    print(f"{'model':<12} {'width':>5} {'params [M]':>10} {'GFLOP/step':>10} {'train [ms]':>11} {'x VF':>6} "
          f"{'GFLOP/s':>8} {'sample [ms]':>12} {'x VF':>6} {'peak [MB]':>10} {'x VF':>6}")
    for m, v in med.items():
        print(f"{m:<12} {widths.get(m, '-'):>5} {v['params'] / 1e6:>10.3f} {v['train_flops'] / 1e9:>10.1f} "
              f"{v['train_step_s'] * 1e3:>11.1f} {v['train_step_s'] / ref['train_step_s']:>6.2f} "
              f"{v['train_flops_per_s'] / 1e9:>8.1f} "
              f"{v['sample_step_s'] * 1e3:>12.1f} {v['sample_step_s'] / ref['sample_step_s']:>6.2f} "
              f"{v['peak_mem_mb']:>10.1f} {v['peak_mem_mb'] / max(ref['peak_mem_mb'], 1e-9):>6.2f}")
    if a.json:
        from vfusion.utils.io import atomic_write_json

        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(a.json), {
            "command": "python experiments/bench_peers.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "device": machine(a.device), "batch": a.batch, "frames": a.frames, "size": a.size, "rounds": a.rounds,
            "iters": a.iters, "matched_by": "training-step FLOPs per clip", "videofusion_train_flops_per_clip": target,
            "widths": widths, "median": med, "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
