"""Tabulate a motion study: per cell FVD, flicker, the optical-flow motion ratio and the object metrics, with
every cell's filmstrip beside the real clips'.

    python experiments/motion_diagnosis.py --study-dir runs/studies/motion_diagnosis_embedded \
        --out experiments/results/motion_diagnosis_embedded

Reads the study's ``results.csv`` (written by ``vfusion study``), each run's ``samples/videos.npy`` with the
labels of ``samples.json``, and the study's real evaluation clips (the seeded subset evaluation uses). Writes
to ``--out``: ``diagnosis.json`` (rows, real values, command, commit), ``diagnosis.md`` (the table),
``motion.png`` (motion ratio and object travel / jump against the real clips, one bar per cell) and
``filmstrips.png`` (for every cell and for the real clips: one ball and one pendulum clip, 8 frames each).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch

from vfusion.evaluation.clip_sources import labelled_subset
from vfusion.evaluation.objects import TRACKED
from vfusion.inference.generate import FRAMES_FILE, MANIFEST, from_uint8
from vfusion.rundir import RunDir
from vfusion.utils.io import atomic_write_json, atomic_write_text, git_sha
from vfusion.utils.video import filmstrip

COLUMNS = ("fvd", "flicker", "motion_ratio", "object_travel", "object_jump", "object_seen")


def _metric(row: dict, stem: str, real: bool = False):
    """The value of the metric whose name starts with ``stem`` followed by the clip count (``fvd32_16f``);
    ``results.csv`` names its metric columns ``metric:NAME``."""
    for key, value in row.items():
        key = key.removeprefix("metric:")
        rest = key[len(stem):]
        if key.startswith(stem) and rest[:1].isdigit() and rest.endswith("_real") == real and value != "":
            return float(value)
    return None


def read_rows(study_dir: Path) -> list[dict]:
    with open(study_dir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def run_clips(run_dir: Path) -> tuple[torch.Tensor, list[int]]:
    folder = RunDir(run_dir).samples_dir
    meta = json.loads((folder / MANIFEST).read_text())
    return from_uint8(np.load(folder / meta.get("frames_file", FRAMES_FILE))), [int(v) for v in meta["labels"]]


def pick(clips: torch.Tensor, labels: list[int], names: list[str]) -> torch.Tensor:
    """The first clip of each tracked class (a ball, a pendulum), in that order."""
    chosen = [clips[labels.index(names.index(n))] for n in TRACKED if n in names and names.index(n) in labels]
    return torch.stack(chosen)


def table(rows: list[dict], real: dict) -> str:
    head = ["cell", "model", "steps", "fvd", "flicker", "motion ratio", "object travel", "object jump", "seen"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    f = lambda v, d=1: "–" if v is None else f"{v:.{d}f}"  # noqa: E731
    for r in rows:
        lines.append(f"| {r['cell']} | {r['model']} | {r['steps']} | {f(r['fvd'], 0)} | {f(r['flicker'])} | "
                     f"{f(r['motion_ratio'], 2)} | {f(r['object_travel'])} | {f(r['object_jump'])} | "
                     f"{f(r['object_seen'], 2)} |")
    lines.append(f"| real clips | | | {f(real['fvd_floor'], 0)} (floor) | {f(real['flicker'])} | 1.00 | "
                 f"{f(real['object_travel'])} | {f(real['object_jump'])} | {f(real['object_seen'], 2)} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], real: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [r["cell"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=False)
    panels = [("motion ratio (flow, generated / real)", [r["motion_ratio"] for r in rows], 1.0, (0.7, 1.3)),
              ("object travel / real", [None if r["object_travel"] is None else r["object_travel"] /
                                        real["object_travel"] for r in rows], 1.0, (0.7, None)),
              ("largest jump / real", [None if r["object_jump"] is None else r["object_jump"] / real["object_jump"]
                                       for r in rows], 1.0, (None, 2.0))]
    for ax, (title, values, ref, (lo, hi)) in zip(axes, panels):
        ax.bar(range(len(cells)), [np.nan if v is None else v for v in values], color="tab:blue")
        ax.axhline(ref, color="k", lw=1, label="real clips")
        for bound in (lo, hi):
            if bound is not None:
                ax.axhline(bound, color="tab:red", ls="--", lw=1)
        ax.set_xticks(range(len(cells)), cells, rotation=60, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.suptitle("motion at equal training FLOPs (dashed: the main job's targets)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def strips(named: list[tuple[str, torch.Tensor]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(named), 1, figsize=(7, 1.45 * len(named)))
    for ax, (name, clips) in zip(np.atleast_1d(axes), named):
        ax.imshow(filmstrip(clips, max_frames=8), interpolation="nearest")
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.subplots_adjust(left=0.2, right=0.98, top=0.99, bottom=0.01, hspace=0.15)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    if not (a.study_dir / "results.csv").is_file():
        print(f"motion_diagnosis: {a.study_dir} has no results.csv; run `vfusion study` on it first", file=sys.stderr)
        return 2
    csv_rows = read_rows(a.study_dir)
    runs = {r["run_id"]: a.study_dir / "runs" / r["run_id"] for r in csv_rows}
    rows = []
    for r in csv_rows:
        rows.append({"cell": r.get("cell", r["run_id"]), "run_id": r["run_id"], "model": r.get("model_name"),
                     "noise": r.get("noise_schedule"), "steps": r.get("steps"),
                     **{c: _metric(r, c) for c in COLUMNS}})
    first = csv_rows[0]
    real = {c: _metric(first, c, real=True) for c in ("flicker", "motion", "object_travel", "object_jump",
                                                      "object_seen")}
    floor_file = a.study_dir / "real_vs_real.json"
    floor = json.loads(floor_file.read_text()) if floor_file.is_file() else {}
    real["fvd_floor"] = _metric(floor.get("metrics", {}), "fvd")

    cfg = RunDir(runs[first["run_id"]]).config()
    clips, labels, names = labelled_subset(cfg.data, cfg.eval.get("real_split") or cfg.data.eval_split,
                                           int(cfg.eval.num_videos))
    named = [("real clips", pick(clips, labels.tolist(), names))]
    for r in rows:
        fake, fake_labels = run_clips(runs[r["run_id"]])
        named.append((r["cell"], pick(fake, fake_labels, names)))

    a.out.mkdir(parents=True, exist_ok=True)
    plot(rows, real, a.out / "motion.png")
    strips(named, a.out / "filmstrips.png")
    atomic_write_text(a.out / "diagnosis.md", table(rows, real))
    atomic_write_json(a.out / "diagnosis.json", {
        "command": "python experiments/motion_diagnosis.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "commit": git_sha(), "study_dir": str(a.study_dir), "real": real, "rows": rows})
    print(table(rows, real))
    print(f"wrote {a.out}/diagnosis.json, diagnosis.md, motion.png, filmstrips.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
