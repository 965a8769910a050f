"""Flicker and drift of every run's samples in a study, next to the same numbers for real clips.

    python experiments/temporal_consistency.py --study-dir runs/studies/NAME [--num-real 64]

For each finished run of the study (``<study-dir>/runs/*/samples/*.mp4``, the videos that
``vfusion study`` writes) it computes :func:`vfusion.evaluation.temporal.frame_change` and
:func:`~vfusion.evaluation.temporal.keyframe_drift` per clip, pools the clips of all seeds
of a grid cell (mean ± std over clips), and does the same for ``--num-real`` clips of the
evaluation split of the study's dataset. Prints a table and writes
``<study-dir>/temporal_consistency.{json,md}``.

The samples are read back from their H.264 ``.mp4`` files and the real clips from the
dataset's own files, so both sides went through a lossy codec; the numbers are for
comparing runs with each other and with the real clips, not for absolute claims.

The same statistics are metrics of ``vfusion evaluate --metrics ...,flicker,drift`` (means
over the clips, ``flicker{N}_{T}f`` next to ``flicker{N}_{T}f_real``, real side cached, in the
study tables through ``metrics.json``). There the generated clips are the run's samples
before any video codec, so the two sets of numbers differ by the codec's share; this
script stays for the per-cell pooling over seeds and the spread over clips.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from vfusion.evaluation.clip_sources import dataset_batches, dataset_subsets
from vfusion.evaluation.temporal import frame_change, keyframe_drift
from vfusion.studies.harness import read_status
from vfusion.studies.rows import mean_std
from vfusion.rundir import RunDir
from vfusion.utils.io import atomic_write_json, atomic_write_text
from vfusion.utils.video import read_video


def clip_stats(videos: torch.Tensor) -> dict[str, list[float]]:
    return {"frame_change": frame_change(videos).tolist(), "keyframe_drift": keyframe_drift(videos).tolist()}


def summary(values: list[float]) -> dict[str, float]:
    mean, std, n = mean_std(values)  # sample std (n - 1), as the study tables
    return {"mean": mean, "std": std or 0.0, "n": n}


def run_cells(study_dir: Path) -> dict[str, dict[str, list[float]]]:
    """Per-clip statistics of every finished run, pooled by grid cell (the run's labels)."""
    cells: dict[str, dict[str, list[float]]] = {}
    plan = study_dir / "study.json"  # the runs in grid order
    runs = ([study_dir / "runs" / r["run_id"] for r in json.loads(plan.read_text())["runs"]] if plan.is_file()
            else sorted((study_dir / "runs").iterdir()))
    for run in runs:
        status = read_status(run) or {}
        files = sorted((run / "samples").glob("*.mp4"))
        if status.get("state") != "done" or not files:
            print(f"skipping {run.name}: not finished or no samples")
            continue
        cell = "/".join(str(v) for v in status.get("labels", {}).values()) or run.name
        stats = clip_stats(torch.stack([read_video(f) for f in files]))
        for key, values in stats.items():
            cells.setdefault(cell, {}).setdefault(key, []).extend(values)
    if not cells:
        raise SystemExit(f"no finished runs with samples under {study_dir / 'runs'}")
    return cells


def real_stats(study_dir: Path, num_real: int) -> dict[str, list[float]]:
    first = next(p for p in sorted((study_dir / "runs").iterdir()) if (p / "config.yaml").is_file())  # same data in all
    cfg = RunDir(first).config()
    split = cfg.eval.real_split or cfg.data.eval_split
    dataset, (indices,) = dataset_subsets(cfg.data, split, [num_real])
    videos = torch.cat(list(dataset_batches(dataset, indices, batch_size=16)))
    return clip_stats(videos)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study-dir", required=True, type=Path, help="a study directory (runs/studies/NAME)")
    ap.add_argument("--num-real", type=int, default=64, help="real clips of the evaluation split (default 64)")
    args = ap.parse_args()

    rows = {cell: {k: summary(v) for k, v in stats.items()} for cell, stats in run_cells(args.study_dir).items()}
    rows["real clips"] = {k: summary(v) for k, v in real_stats(args.study_dir, args.num_real).items()}
    lines = ["| run (seeds pooled) | clips | frame change [grey levels] | keyframe drift [grey levels] |",
             "|---|---|---|---|"]
    for cell, s in rows.items():
        fc, kd = s["frame_change"], s["keyframe_drift"]
        lines.append(f"| {cell} | {fc['n']} | {fc['mean']:.2f} ± {fc['std']:.2f} | {kd['mean']:.2f} ± {kd['std']:.2f} |")
    table = "\n".join(lines)
    print(table)
    atomic_write_json(args.study_dir / "temporal_consistency.json", rows)
    atomic_write_text(args.study_dir / "temporal_consistency.md",
                      "# Temporal consistency of the samples (mean ± std over clips)\n\n"
                      f"`python experiments/temporal_consistency.py --study-dir {args.study_dir} "
                      f"--num-real {args.num_real}`\n\n{table}\n")


if __name__ == "__main__":
    main()
