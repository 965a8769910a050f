"""Parameters and training-step time (forward + backward) of the baseline models.

    python experiments/bench_models.py [--frames 16 --size 32 --batch 4 --iters 3 --device cpu]

Each model is built from the default config plus the overrides listed in ``MODELS``
(pixels, 3 channels, 101 classes as UCF-101). Time: minimum and median over ``--iters``
steps after one warm-up step (the minimum is less sensitive to other processes on a
shared CPU); the loss is the MSE against random noise.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vfusion.models.registry import build_model
from vfusion.conditioning import Cond
from vfusion.experiment import Experiment

MODELS = {
    "video_unet": {"model": {"name": "video_unet"}},
    "video_unet(conv only)": {"model": {"name": "video_unet", "video_unet": {"temporal_layers": "conv"}}},
    "dit-tiny": {"model": {"name": "dit", "dit": {"size": "tiny"}}},
    "dit-tiny(pt=2)": {"model": {"name": "dit", "dit": {"size": "tiny", "temporal_patch_size": 2}}},
}


def step_ms(model, x, t, y, iters: int) -> tuple[float, float]:
    """(min, median) milliseconds of one forward + backward; min is the robust one on a shared CPU."""
    times = []
    for i in range(iters + 1):
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        loss = (model(x, t, Cond(class_labels=y)) - torch.randn_like(x)).square().mean()
        loss.backward()
        if x.is_cuda:
            torch.cuda.synchronize()
        if i:  # the first step is warm-up
            times.append((time.perf_counter() - start) * 1000)
    return min(times), statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--classes", type=int, default=101)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec = Experiment.from_config({"name": "bench"}).model_spec(args.channels, args.size, args.frames, args.classes)
    x = torch.randn(args.batch, args.channels, args.frames, args.size, args.size, device=args.device)
    t = torch.randint(0, 1000, (args.batch,), device=args.device)
    y = torch.randint(0, args.classes + 1, (args.batch,), device=args.device)
    print(f"# {args.batch} x {args.channels} x {args.frames} x {args.size} x {args.size}, device {args.device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'model':24s} {'params':>12s} {'spatial':>12s} {'temporal':>12s} {'min ms':>10s} {'median ms':>10s}")
    for name, overrides in MODELS.items():
        model = build_model(resolve_config({"name": "bench"}, overrides), spec).to(args.device).train()
        counts = model.parameter_counts()
        fastest, median = step_ms(model, x, t, y, args.iters)
        print(f"{name:24s} {counts['all']['trainable']:12,d} {counts['spatial']['total']:12,d} "
              f"{counts['temporal']['total']:12,d} {fastest:10.1f} {median:10.1f}")


if __name__ == "__main__":
    main()
