"""Carry a study's finished runs to another machine without their weights, so a study longer than one
machine's session resumes where it stopped.

    python experiments/study_carry.py save --study-dir runs/studies/factorial_embedded \
        --to experiments/results/factorial_embedded/finished_runs
    python experiments/study_carry.py restore --study-dir runs/studies/factorial_embedded \
        --from experiments/results/factorial_embedded/finished_runs

``save`` copies what the study's tables and report read of every finished run (``status.json``,
``metrics.json``, ``model_info.json``, ``run_info.json``, ``config.yaml`` and the TensorBoard scalars in
``tb/``, a few tens of kB a run), with absolute paths made machine-neutral, plus the study's real-vs-real
floor, and for the first run of each grid cell a small ``samples/grid.gif`` (its first 4 clips) for the study's
report page. Checkpoints, pipelines and the other samples stay behind. ``restore`` puts them back into the study folder
(never over a run that is already there); ``vfusion study`` then skips those runs, as finished, and
trains only the rest. A restored run cannot be sampled again (it has no weights).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from vfusion.rundir import REAL_VS_REAL_FILE, RunDir  # noqa: E402
from vfusion.utils.io import atomic_write_json, atomic_write_text, portable_paths  # noqa: E402

JSON_FILES = ("status.json", "metrics.json", "model_info.json", "run_info.json")
GRID_CLIPS = 4


def save(study_dir: Path, to: Path) -> int:
    from omegaconf import OmegaConf

    runs = sorted(p for p in (study_dir / "runs").iterdir() if p.is_dir()) if (study_dir / "runs").is_dir() else []
    saved, cells = 0, set()
    for run_dir in sorted(runs, key=lambda p: (RunDir(p).read_status() or {}).get("seed", 0)):
        status = RunDir(run_dir).read_status() or {}
        if status.get("state") != "done":
            continue
        out = to / run_dir.name
        cell = json.dumps(status.get("labels"), sort_keys=True)
        if cell not in cells and (RunDir(run_dir).samples_dir / "videos.npy").is_file():
            cells.add(cell)
            small_grid(run_dir, out / "samples" / "grid.gif")
        out.mkdir(parents=True, exist_ok=True)
        for name in JSON_FILES:
            if (run_dir / name).is_file():
                atomic_write_json(out / name, portable_paths(json.loads((run_dir / name).read_text()), ROOT))
        config = portable_paths(OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml")), ROOT)
        atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(config)))
        shutil.rmtree(out / "tb", ignore_errors=True)
        shutil.copytree(run_dir / "tb", out / "tb")
        saved += 1
    floor = study_dir / REAL_VS_REAL_FILE
    if floor.is_file():
        atomic_write_json(to / REAL_VS_REAL_FILE, portable_paths(json.loads(floor.read_text()), ROOT))
    print(f"saved {saved} finished run(s) of {study_dir} to {to}")
    return 0


def small_grid(run_dir: Path, path: Path, clips: int = GRID_CLIPS) -> Path:
    """An animated grid of the run's first ``clips`` samples at their own size."""
    import numpy as np
    import torch

    from vfusion.utils.video import make_grid_frames, write_gif

    videos = np.load(RunDir(run_dir).samples_dir / "videos.npy", mmap_mode="r")[:clips]   # (B, T, H, W, C) uint8
    clips_t = torch.from_numpy(np.array(videos)).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_gif(path, make_grid_frames(clips_t, nrow=4))


def restore(study_dir: Path, source: Path) -> int:
    if not source.is_dir():
        print(f"error: {source} does not exist; save a study's runs there first", file=sys.stderr)
        return 2
    restored = kept = 0
    for run in sorted(p for p in source.iterdir() if p.is_dir()):
        target = study_dir / "runs" / run.name
        if target.exists():
            kept += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(run, target)
        restored += 1
    floor = source / REAL_VS_REAL_FILE
    if floor.is_file() and not (study_dir / REAL_VS_REAL_FILE).is_file():
        shutil.copy2(floor, study_dir / REAL_VS_REAL_FILE)
    print(f"restored {restored} finished run(s) into {study_dir} ({kept} already there, left as they were)")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("save")
    s.add_argument("--study-dir", type=Path, required=True)
    s.add_argument("--to", type=Path, required=True)
    r = sub.add_parser("restore")
    r.add_argument("--study-dir", type=Path, required=True)
    r.add_argument("--from", dest="source", type=Path, required=True)
    args = p.parse_args(argv)
    if args.command == "save":
        return save(args.study_dir, args.to)
    return restore(args.study_dir, args.source)


if __name__ == "__main__":
    raise SystemExit(main())
