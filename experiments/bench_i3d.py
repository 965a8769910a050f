"""I3D feature throughput (FVD protocol input: 16 x 224 x 224 clips in [-1, 1]) and peak RSS.

Usage: python experiments/bench_i3d.py [--batch 4] [--frames 16] [--reps 3] [--dir WEIGHTS_DIR]
       [--device cpu] [--threads N]
Weights come from the cache (``vfusion weights fetch``); random clips are used since the
cost does not depend on the content.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--dir", default=None, help="weights folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from vfusion.evaluation.i3d import i3d_features, load_i3d

    model = load_i3d(args.dir, device=args.device)
    clips = torch.rand(args.batch, 3, args.frames, 224, 224, generator=torch.Generator().manual_seed(0)) * 2 - 1
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    i3d_features(model, clips)  # warm-up
    sync()
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        feats = i3d_features(model, clips)
        sync()
        times.append(time.perf_counter() - t0)
    best, mean = min(times), sum(times) / len(times)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(f"device={args.device} cpu={platform.processor() or platform.machine()} torch={torch.__version__} "
          f"threads={torch.get_num_threads()}")
    print(f"batch={args.batch} clip={args.frames}x224x224 reps={args.reps} features={tuple(feats.shape)}")
    print(f"clips/s: best {args.batch / best:.2f}, mean {args.batch / mean:.2f} "
          f"(s/batch best {best:.2f}, mean {mean:.2f})")
    print(f"peak RSS: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
