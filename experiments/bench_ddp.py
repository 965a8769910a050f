"""Benchmark: training throughput on 1 and on 2 CPU processes (Lightning DDP, gloo) at the same global batch.

Each run is ``vfusion.training.runner.fit`` on the config's data (default: the embedded main job's
stage 2, its base trained jointly from scratch) for ``--steps`` steps; clips per second are counted over
the steps after ``--warmup``. The machine's cores are split evenly so the runs are comparable: one
process with all of them, or two with half each (``OMP_NUM_THREADS``). Runs alternate over
``--rounds``; the faster of each is kept.

    python experiments/bench_ddp.py --rounds 2 --json experiments/results/bench_ddp.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L


class StepClock(L.Callback):
    """Rank 0's wall time at the end of every training step, written as JSON when training ends."""

    def __init__(self, out: Path):
        self.out, self.times = out, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.times.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module):
        if trainer.global_rank == 0:
            self.out.write_text(json.dumps({"times": self.times, "world_size": trainer.world_size}))


def worker(args) -> None:
    from vfusion.experiment import load_experiment_config
    from vfusion.training.runner import fit

    procs = args.procs
    cfg = load_experiment_config(args.config, [
        f"run_dir={args.run_dir}", "model.base.pretrained=null", f"train.max_steps={args.steps}",
        "train.accelerator=cpu", f"train.devices={procs}", "train.strategy=" + ("ddp" if procs > 1 else "auto"),
        f"data.batch_size={args.global_batch // procs}", "data.num_workers=0", "train.progress_bar=false",
        f"train.checkpoint_every_n_steps={10 * args.steps}", "train.sample_every_n_steps=0", *args.overrides])
    fit(cfg, extra_callbacks=[StepClock(Path(args.out))])


def run(args, procs: int) -> dict:
    threads = max(1, (os.cpu_count() or 2) // procs)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "clock.json"
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), PL_DISABLE_FORK="1")
        cmd = [sys.executable, __file__, "--worker", "--procs", str(procs), "--config", args.config,
               "--steps", str(args.steps), "--global-batch", str(args.global_batch), "--run-dir", str(Path(tmp) / "run"),
               "--out", str(out), *args.overrides]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{procs}-process run failed:\n{proc.stderr[-3000:]}")
        clock = json.loads(out.read_text())
    times = clock["times"][args.warmup:]
    seconds = (times[-1] - times[0]) / (len(times) - 1)
    return {"processes": procs, "threads_per_process": threads, "world_size": clock["world_size"],
            "step_s": seconds, "clips_per_s": args.global_batch / seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/embedded.yaml")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--global-batch", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--procs", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    a = p.parse_args(argv)
    if a.worker:
        worker(a)
        return 0
    if a.global_batch % 2:
        p.error("--global-batch must be even (it is split over 2 processes)")
    runs = []
    for r in range(a.rounds):
        for procs in (1, 2):
            runs.append(run(a, procs))
            print(f"round {r + 1}/{a.rounds}: {procs} process(es) x {runs[-1]['threads_per_process']} threads: "
                  f"{runs[-1]['step_s']:.3f} s/step, {runs[-1]['clips_per_s']:.2f} clips/s", flush=True)
    best = {n: max((x for x in runs if x["processes"] == n), key=lambda x: x["clips_per_s"]) for n in (1, 2)}
    ratio = best[2]["clips_per_s"] / best[1]["clips_per_s"]
    print(f"2 processes / 1 process throughput: {ratio:.2f}")
    if a.json:
        from vfusion.utils.io import atomic_write_json

        atomic_write_json(Path(a.json), {
            "command": "python experiments/bench_ddp.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "cpu_count": os.cpu_count(), "global_batch": a.global_batch, "steps": a.steps, "warmup": a.warmup,
            "best": {str(k): v for k, v in best.items()}, "two_over_one": ratio, "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
