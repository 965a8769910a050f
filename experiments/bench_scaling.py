"""Benchmark: how a training step's time and memory grow with frames and resolution, against counted FLOPs.

VideoFusion runs its base network once per clip and the small residual network on the other frames,
so its cost should grow as C_base + (T-1)·C_res where a video UNet grows as T·C_video (method.md).
This script measures that growth for VideoFusion, the video UNet and the DiT (the main job's sizes,
as in ``bench_peers.py``): at T in ``--frames`` and at ``--sizes`` px, around ``--reference`` (default
16 frames at 32 px, the main job's shape).

The cost model predicts each point's step time from its counted FLOPs at the model's own achieved
rate at the reference point: predicted = FLOPs / (FLOPs_ref / time_ref). Beside it
go the machine's ceilings, measured in the same run: a large fp32 matrix product and a large 3x3
convolution, and every point's achieved FLOP/s as a fraction of each. Each point runs in its own
process (its peak memory is its own), the models alternate within a round; a time is the fastest of
``--iters`` steps (load only ever adds time), and each figure the median over ``--rounds``.

    python experiments/bench_scaling.py --rounds 2 --json experiments/results/bench_scaling.json \
        --plot experiments/results/bench_scaling.png
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common, also when loaded by path
from bench_common import PROJECT_MODELS, in_subprocess, machine  # noqa: E402

def points(frames: list[int], sizes: list[int], reference: tuple[int, int]) -> list[tuple[int, int]]:
    """The frame counts at the reference size, then the sizes at the reference frame count."""
    grid = [(t, reference[1]) for t in frames] + [(reference[0], s) for s in sizes]
    return sorted(set(grid), key=grid.index)


def _median_of(runs: list[dict]) -> dict:
    keys = ("train_step_s", "sample_step_s", "peak_mem_mb")
    return {**runs[0], **{k: statistics.median(r[k] for r in runs) for k in keys}, "rounds": len(runs)}


def predict(table: list[dict], ceiling: dict, reference: tuple[int, int]) -> list[dict]:
    """Each point with the cost model's time (the model's rate at ``reference``) and its fractions of the ceilings."""
    rate = {r["model"]: r["train_flops"] / r["train_step_s"] for r in table if (r["frames"], r["size"]) == reference}
    out = []
    for r in table:
        achieved = r["train_flops"] / r["train_step_s"]
        predicted = r["train_flops"] / rate[r["model"]] if r["model"] in rate else None
        out.append({**r, "achieved_flops_per_s": achieved, "predicted_train_step_s": predicted,
                    "measured_over_predicted": r["train_step_s"] / predicted if predicted else None,
                    "fraction_of_gemm": achieved / ceiling["gemm_flops_per_s"],
                    "fraction_of_conv": achieved / ceiling["conv_flops_per_s"]})
    return out


def plot(rows: list[dict], path: Path, reference: tuple[int, int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 8))
    for col, (axis, fixed, label) in enumerate((("frames", ("size", reference[1]), f"frames T ({reference[1]} px)"),
                                                 ("size", ("frames", reference[0]),
                                                  f"resolution [px] ({reference[0]} frames)"))):
        for model in dict.fromkeys(r["model"] for r in rows):
            sel = sorted((r for r in rows if r["model"] == model and r[fixed[0]] == fixed[1]), key=lambda r: r[axis])
            xs = [r[axis] for r in sel]
            line, = axes[0, col].plot(xs, [r["train_step_s"] for r in sel], "o-", label=f"{model} measured")
            axes[0, col].plot(xs, [r["predicted_train_step_s"] for r in sel], "--", color=line.get_color(),
                              label=f"{model} from FLOPs")
            axes[1, col].plot(xs, [r["peak_mem_mb"] for r in sel], "o-", color=line.get_color(), label=model)
        for row, ylabel in ((0, "training step [s]"), (1, "peak memory [MB]")):
            ax = axes[row, col]
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(label)
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
        axes[0, col].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/embedded.yaml")
    p.add_argument("--models", default=",".join(PROJECT_MODELS))
    p.add_argument("--frames", default="8,16,32,64", help="frame counts at the reference resolution")
    p.add_argument("--sizes", default="32,64,128", help="resolutions at the reference frame count")
    p.add_argument("--reference", default="16,32", help="FRAMES,PX: the point the cost model is calibrated at "
                                                         "(default: the main job's shape)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--iters", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--ceiling-seconds", type=float, default=3.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    p.add_argument("overrides", nargs="*", help="key=value overrides of the project's models")
    a = p.parse_args(argv)
    models = a.models.split(",")
    reference = tuple(int(v) for v in a.reference.split(","))
    grid = points([int(t) for t in a.frames.split(",")], [int(s) for s in a.sizes.split(",")], reference)
    if reference not in grid:
        p.error(f"--frames and --sizes must hold the reference point {reference[0]} frames at {reference[1]} px")
    runs: dict[tuple, list[dict]] = {}
    ceiling_runs = []
    total = a.rounds * len(grid) * len(models)
    done = 0
    for r in range(a.rounds):
        ceiling_runs.append(in_subprocess({"kind": "ceilings", "seconds": a.ceiling_seconds}))
        for frames, size in grid:
            for model in models:
                spec = {"model": model, "config": a.config, "batch": a.batch, "frames": frames, "size": size,
                        "iters": a.iters, "warmup": a.warmup, "device": a.device, "overrides": a.overrides}
                res = in_subprocess(spec)
                runs.setdefault((model, frames, size), []).append(res)
                done += 1
                print(f"[{done}/{total}] round {r + 1} {model:<12} T={frames:<3} {size:>3} px  "
                      f"train {res['train_step_s']:7.3f} s  peak {res['peak_mem_mb']:8.1f} MB", flush=True)
    ceiling = {k: statistics.median(c[k] for c in ceiling_runs) for k in ("gemm_flops_per_s", "conv_flops_per_s")}
    rows = predict([_median_of(v) for v in runs.values()], ceiling, reference)
    print(f"\nceilings: GEMM {ceiling['gemm_flops_per_s'] / 1e9:.1f} GFLOP/s, 3x3 conv "
          f"{ceiling['conv_flops_per_s'] / 1e9:.1f} GFLOP/s ({machine(a.device)})")
    print(f"{'model':<12} {'T':>3} {'px':>4} {'GFLOP':>8} {'train [s]':>10} {'predicted':>10} {'meas/pred':>9} "
          f"{'%GEMM':>6} {'%conv':>6} {'peak [MB]':>10}")
    for r in rows:
        print(f"{r['model']:<12} {r['frames']:>3} {r['size']:>4} {r['train_flops'] / 1e9:>8.1f} "
              f"{r['train_step_s']:>10.3f} {r['predicted_train_step_s']:>10.3f} {r['measured_over_predicted']:>9.2f} "
              f"{100 * r['fraction_of_gemm']:>6.1f} {100 * r['fraction_of_conv']:>6.1f} {r['peak_mem_mb']:>10.1f}")
    if a.json:
        from vfusion.utils.io import atomic_write_json

        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(a.json), {
            "command": "python experiments/bench_scaling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "device": machine(a.device), "batch": a.batch, "rounds": a.rounds, "iters": a.iters,
            "reference": {"frames": reference[0], "size": reference[1]}, **ceiling, "ceiling_runs": ceiling_runs,
            "points": rows})
    if a.plot:
        plot(rows, Path(a.plot), reference)
    return 0


if __name__ == "__main__":
    sys.exit(main())
