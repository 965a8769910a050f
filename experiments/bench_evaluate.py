"""Benchmark: peak memory (RSS) of ``evaluate_run`` versus the number of generated clips N.

Shows that evaluation streams: generated batches are consumed one at a time, the
Fréchet statistics are O(D²) sums, and only the per-clip I3D features / class
probabilities (N × 400 float64, needed by KVD and IS) grow with N — about 3.3 kB per
clip per kept array, i.e. ~20 MB for N = 2048.

Each N runs in its own subprocess. There, the run's ``generate`` is replaced by a
synthetic generator (smooth random clips, ``--frames`` x ``--size``², batches of
``--batch``, the layout and range of real samples) and the real dataset by a
synthetic one of N clips, so the measurement is the evaluation pipeline itself. After
the detectors are loaded and warmed up on one batch, the kernel's peak-RSS counter is
reset (``/proc/self/clear_refs``; elsewhere ``ru_maxrss`` is used and includes set-up)
and the peak during ``evaluate_run`` is reported next to the baseline.

Detectors: ``--detector i3d`` uses the real I3D (FVD/KVD/IS; weights from
``--weights-dir``/``$VFUSION_WEIGHTS_DIR``) and, with ``--fid``, Inception. On a CPU
the I3D costs seconds per clip (every clip is upsampled to 224x224x16), so N = 2048 is
a GPU job there; ``--detector tiny`` runs random conv nets with the same output sizes
(400-d clip features, 2048-d frame features) and measures the same streaming path.

    python experiments/bench_evaluate.py --detector tiny --n 256 2048 --fid
    python experiments/bench_evaluate.py --detector i3d --n 16 64 256 --weights-dir DIR

Measured (2 CPU threads, 16 frames at 32x32, batch 8; results/bench_evaluate_*.json):
  tiny + FID, N = 256 / 2048: peak +401 / +451 MB above baseline; while streaming
  +223 / +234 MB (real) and +227 / +249 MB (generated); the rest of the peak is the
  metric computation (torchmetrics' 2048-d eigvals; KVD kernels of 1000-clip subsets).
  Held after malloc_trim at the end: +198 / +218 MB (mostly FID's 2048² states).
  Real I3D (fvd,kvd,is), N = 16 / 64 / 256: peak +772 / +729 / +758 MB (I3D activations of
  one batch at 224x224x16), 0.65 s per clip.
  Before the kept features went into one growing array (features.RowBuffer), the
  streaming peak grew ~80 kB per clip (heap fragmentation): +233 MB at 256, +565 at 4096.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    """Give freed heap pages back to the OS (glibc), so RSS shows what is still held."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _tiny_detectors(fid: bool):
    import torch
    from torch import nn

    from vfusion.evaluation.evaluate import Detectors

    class ClipNet(nn.Module):  # (B, 3, T, H, W) -> (B, 400), like the I3D logits
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv3d(3, 16, 3, stride=2), nn.Linear(16, 400)

        def forward(self, v):
            return self.fc(torch.relu(self.conv(v)).mean((2, 3, 4)))

    class FrameNet(nn.Module):  # uint8 (N, 3, H, W) -> (N, 2048), like Inception pool3
        num_features = 2048

        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 16, 3, stride=2), nn.Linear(16, 2048)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x.float() / 127.5 - 1)).mean((2, 3)))

    torch.manual_seed(0)
    info = {"i3d_k400": {"name": "tiny_random_clipnet", "sha256": None}}
    if fid:
        info["inception_v3"] = {"name": "tiny_random_framenet", "sha256": None}
    return Detectors(i3d=ClipNet().eval(), inception=FrameNet().eval() if fid else None, info=info, device="cpu")


def child(args) -> dict:
    import torch

    import vfusion.data
    from vfusion.experiment import resolve_config
    from vfusion.rundir import save_config
    from vfusion.evaluation import core as C
    from vfusion.evaluation import evaluate as E

    torch.set_num_threads(args.threads)
    n, frames, size = args.n[0], args.frames, args.size

    def clips(count: int, seed: int, shift: float = 0.0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(count, 3 * frames, 8, 8, generator=g) - 0.5
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return (x.view(count, 3, frames, size, size) + shift).clamp(-1, 1)

    class SyntheticDataset(torch.utils.data.Dataset):
        def __len__(self):
            return n

        def __getitem__(self, i):
            return clips(1, 10_000 + int(i))[0], 0

    def run_clip_batches(run_dir, settings, device):
        done = 0
        while done < settings.num_videos:
            b = min(settings.batch_size, settings.num_videos - done)
            yield clips(b, settings.seed + done, shift=0.1)
            done += b

    vfusion.data.build_dataset = lambda *a, **k: SyntheticDataset()
    E.run_clip_batches = run_clip_batches

    metrics = "fvd,kvd,is" + (",fid" if args.fid else "")
    if args.detector == "tiny":
        det = _tiny_detectors(args.fid)
    else:
        det = E.load_detectors(E.expand_metrics(metrics), weights_dir=args.weights_dir, device="cpu")
    with torch.no_grad():  # warm-up: allocator pools and kernels exist before the baseline
        det.i3d(clips(args.batch, 0))
        if det.inception is not None:
            det.inception((clips(args.batch, 0)[:, :, 0].add(1).mul(127.5)).to(torch.uint8))

    stages: dict[str, float] = {}    # peak RSS above baseline at the end of each stage
    retained: dict[str, float] = {}  # RSS above baseline after the stage, once malloc returned free pages
    consume, compute = C._consume, C.compute_metrics  # the core's stages, hooked

    def log(stage: str) -> None:
        stages[stage] = _rss_mb("VmHWM") - base
        _malloc_trim()
        retained[stage] = _rss_mb("VmRSS") - base

    def consume_logged(batches, side, desc, *a, **k):
        consume(batches, side, desc, *a, **k)
        log("real clips" if side.fid_real else "generated clips")

    def compute_logged(*a, **k):
        out = compute(*a, **k)
        log("metric computation")
        return out

    C._consume, C.compute_metrics = consume_logged, compute_logged
    with tempfile.TemporaryDirectory() as tmp:
        cfg = resolve_config({"name": "bench"}, overrides=[
            f"run_dir={tmp}/run", f"data.num_frames={frames}", f"data.resolution={size}", "data.num_workers=0",
            f"data.cache_dir={tmp}/cache", f"eval.batch_size={args.batch}"])
        save_config(cfg, Path(tmp) / "run" / "config.yaml")
        _malloc_trim()
        reset = _reset_peak()
        base = _rss_mb("VmRSS")
        t0 = time.time()
        result = E.evaluate_run(Path(tmp) / "run", metrics=metrics, num_videos=n, detectors=det,
                                progress=False, out=Path(tmp) / "metrics.json")
        wall = time.time() - t0
    peak = _rss_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"n": n, "detector": args.detector, "metrics": result["metrics"], "frames": frames, "size": size,
            "batch": args.batch, "baseline_rss_mb": round(base, 1), "peak_rss_mb": round(peak, 1),
            "peak_above_baseline_mb": round(peak - base, 1),
            "peak_above_baseline_after_mb": {k: round(v, 1) for k, v in stages.items()},
            "retained_above_baseline_after_mb": {k: round(v, 1) for k, v in retained.items()},
            "peak_reset": reset, "wall_s": round(wall, 1),
            "s_per_clip_both_sides": round(wall / (2 * n), 4), "threads": args.threads}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", choices=("tiny", "i3d"), default="tiny")
    ap.add_argument("--n", type=int, nargs="+", default=[256, 2048])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--fid", action="store_true", help="also per-frame FID (Inception with --detector i3d)")
    ap.add_argument("--weights-dir", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="experiments/results/bench_evaluate.json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args)))
        return

    rows = []
    for n in args.n:
        cmd = [sys.executable, __file__, "--child", "--detector", args.detector, "--n", str(n), "--frames",
               str(args.frames), "--size", str(args.size), "--batch", str(args.batch), "--threads", str(args.threads)]
        cmd += ["--fid"] if args.fid else []
        cmd += ["--weights-dir", args.weights_dir] if args.weights_dir else []
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            sys.exit(f"N={n} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        row = json.loads(lines[-1][len("RESULT "):])
        rows.append(row)
        print(f"N={n:5d}  baseline {row['baseline_rss_mb']:7.1f} MB  peak {row['peak_rss_mb']:7.1f} MB  "
              f"(+{row['peak_above_baseline_mb']:.1f} MB)  {row['wall_s']:.1f} s  stages: "
              + ", ".join(f"{k} +{v:.0f}" for k, v in row["peak_above_baseline_after_mb"].items())
              + "  | held after trim: "
              + ", ".join(f"{k} +{v:.0f}" for k, v in row["retained_above_baseline_after_mb"].items()), flush=True)

    from vfusion.utils.io import atomic_write_json, environment_info

    atomic_write_json(args.out, {"benchmark": "evaluate_run peak RSS vs N (streaming)", "rows": rows,
                                 "command": " ".join(sys.argv), "environment": environment_info()})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
