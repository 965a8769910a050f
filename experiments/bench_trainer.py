"""Benchmark: what the Lightning trainer adds to a training step, against a bare PyTorch loop.

Both sides train the same module (``vfusion.training.runner.build_module`` of the config, the same
initial weights) on the same batches (random clips of the config's shape, drawn once):

- **Lightning**: the project's own trainer (``runner.build_trainer``: checkpoint callback, TensorBoard
  logger, the module's ``training_step`` with its ``self.log`` calls, EMA and lr logging in its hooks,
  gradient clipping, the progress bar as the config sets it);
- **bare loop**: ``diffusion_loss`` → ``backward`` → gradient clipping → AdamW step → lr schedule step →
  EMA update, with the optimizer and schedule from the module's own ``configure_optimizers``.

A step's time is the wall time between the ends of two consecutive steps (so everything the trainer
does between steps counts), median over the steps after a warm-up. The two sides alternate, each
``--rounds`` times, in one process, so machine load hits both alike; the overhead is the ratio of
the medians.

    python experiments/bench_trainer.py --config configs/embedded.yaml --steps 40 --rounds 2 \\
        --json experiments/results/bench_trainer.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _batches(spec_info: dict, batch: int, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shape = (batch, spec_info["in_channels"], spec_info["num_frames"], spec_info["sample_size"],
             spec_info["sample_size"])
    return [(torch.rand(shape, generator=g) * 2 - 1, torch.randint(0, max(spec_info["num_classes"], 1), (batch,),
                                                                   generator=g)) for _ in range(n)]


def _module(cfg, spec_info):
    from vfusion.training.runner import build_module

    torch.manual_seed(0)
    return build_module(cfg, spec_info)


def _steady(ends: list[float], warmup: int) -> float:
    gaps = [b - a for a, b in zip(ends, ends[1:])][warmup:]
    return statistics.median(gaps)


def lightning_steps(cfg, spec_info, batches, warmup: int) -> float:
    import lightning as L
    from torch.utils.data import DataLoader

    from vfusion.training.runner import build_trainer

    ends: list[float] = []

    class _Clock(L.Callback):
        def on_train_batch_end(self, *args):
            ends.append(time.perf_counter())

    module = _module(cfg, spec_info)
    loader = DataLoader(batches, batch_size=None, shuffle=False)  # the batches as they are
    with tempfile.TemporaryDirectory() as d:
        trainer = build_trainer(cfg, Path(d), max_steps=len(batches), max_minutes=0, callbacks=[_Clock()])
        trainer.fit(module, train_dataloaders=loader)
    return _steady(ends, warmup)


def bare_steps(cfg, spec_info, batches, warmup: int) -> float:
    module = _module(cfg, spec_info)
    module.train()
    opt_cfg = module.configure_optimizers()
    opt, sched = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
    clip = cfg.train.optim.grad_clip
    params = [p for g in opt.param_groups for p in g["params"]]
    if module.ema is not None:
        module.ema.to("cpu")
    ends = []
    for batch in batches:
        x, y = module.prepare_batch(batch)
        loss = module.diffusion_loss(x, y)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, float(clip))
        opt.step()
        sched.step()
        if module.ema is not None:
            module.ema.step(module.model.parameters())
        ends.append(time.perf_counter())
    return _steady(ends, warmup)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/embedded.yaml")
    p.add_argument("--steps", type=int, default=40, help="steps per side and round (default 40)")
    p.add_argument("--warmup", type=int, default=5, help="steps left out of each median (default 5)")
    p.add_argument("--rounds", type=int, default=2, help="times each side runs, alternating (default 2)")
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    a = p.parse_args(argv)
    if a.steps < a.warmup + 3:
        print("bench_trainer: --steps must exceed --warmup by at least 3", flush=True)
        return 2
    from vfusion.config import load_config
    from vfusion.utils.quiet import quiet_third_party

    quiet_third_party()
    cfg = load_config(a.config, ["model.base.pretrained=null", "train.accelerator=cpu", "train.devices=1",
                                 "train.sample_every_n_steps=0", *a.overrides])
    spec_info = {"in_channels": 3, "sample_size": int(cfg.data.resolution), "num_frames": int(cfg.data.num_frames),
                 "num_classes": 4 if cfg.data.class_conditional else 0, "class_names": []}
    batches = _batches(spec_info, int(cfg.data.batch_size), a.steps)
    times = {"lightning": [], "bare": []}
    for r in range(a.rounds):
        for side, fn in (("lightning", lightning_steps), ("bare", bare_steps)):
            times[side].append(fn(cfg, spec_info, batches, a.warmup))
            print(f"round {r + 1}/{a.rounds} {side:<9}: {times[side][-1] * 1000:8.1f} ms/step", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    overhead = med["lightning"] / med["bare"] - 1.0
    print(f"\n{cfg.model.name}, batch {cfg.data.batch_size} x {cfg.data.num_frames} frames at "
          f"{cfg.data.resolution} px, {torch.get_num_threads()} threads")
    print(f"  bare loop   {med['bare'] * 1000:8.1f} ms/step")
    print(f"  Lightning   {med['lightning'] * 1000:8.1f} ms/step")
    print(f"  overhead    {overhead * 100:+8.1f} %  (target: at most +5 %)")
    if a.json:
        from vfusion.utils.io import atomic_write_json

        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(a.json), {
            "config": a.config, "overrides": a.overrides, "model": str(cfg.model.name),
            "batch": int(cfg.data.batch_size), "frames": int(cfg.data.num_frames),
            "resolution": int(cfg.data.resolution), "threads": torch.get_num_threads(), "steps": a.steps,
            "warmup": a.warmup, "rounds": a.rounds, "ms_per_step": {k: [v * 1000 for v in vs] for k, vs in times.items()},
            "median_ms": {k: v * 1000 for k, v in med.items()}, "overhead": overhead,
            "command": "python experiments/bench_trainer.py " + " ".join(argv if argv is not None else [])})
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
