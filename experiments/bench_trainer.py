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
``--rounds`` times, in one process; the side-by-side overhead is the ratio of the medians. On a shared
machine that ratio moves by +-10 % from round to round with the load (the same forward pass runs 10 %
slower in one round than in the next), so the script also measures the trainer's own work inside the
Lightning steps themselves: each step's wall time minus the time spent in the work the bare loop also
does (loss forward, backward, clipping + optimizer step, EMA). That figure, as a share of the shared
work, does not depend on the load.

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


class _Timed:
    """Wraps a callable and adds the seconds spent in it to ``bucket[key]`` of the current step."""

    def __init__(self, fn, steps: list, key: str):
        self.fn, self.steps, self.key = fn, steps, key

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            if self.steps:
                self.steps[-1][self.key] = self.steps[-1].get(self.key, 0.0) + time.perf_counter() - t0


def lightning_steps(cfg, spec_info, batches, warmup: int) -> tuple[float, float]:
    """(median step time, median time of the trainer's own work per step) of the Lightning side.

    The trainer's own work is what is left of a step when the work the bare loop also does is taken
    out: the loss forward (``diffusion_loss``), backward, gradient clipping + the optimizer step
    (from ``on_before_optimizer_step`` to the end of the batch) and the EMA update. Both figures come
    from the same steps, so machine load that slows the whole step does not enter their ratio.
    """
    import lightning as L
    from torch.utils.data import DataLoader

    from vfusion.training.runner import build_trainer

    ends: list[float] = []
    steps: list[dict] = []

    class _Clock(L.Callback):
        def on_train_batch_start(self, *args):
            steps.append({})

        def on_before_backward(self, *args):
            steps[-1]["backward_start"] = time.perf_counter()

        def on_after_backward(self, *args):
            steps[-1]["backward"] = time.perf_counter() - steps[-1].pop("backward_start")

        def on_before_optimizer_step(self, *args):
            steps[-1]["optimizer_start"] = time.perf_counter()

        def on_train_batch_end(self, *args):
            now = time.perf_counter()
            steps[-1]["optimizer"] = now - steps[-1].pop("optimizer_start")
            ends.append(now)

    module = _module(cfg, spec_info)
    module.diffusion_loss = _Timed(module.diffusion_loss, steps, "forward")
    if module.ema is not None:
        module.ema.step = _Timed(module.ema.step, steps, "ema")
    loader = DataLoader(batches, batch_size=None, shuffle=False)  # the batches as they are
    with tempfile.TemporaryDirectory() as d:
        trainer = build_trainer(cfg, Path(d), max_steps=len(batches), max_minutes=0, callbacks=[_Clock()])
        trainer.fit(module, train_dataloaders=loader)
    # the step between two batch ends: its work is split between the two (EMA runs after the clock's hook)
    gaps = [b - a for a, b in zip(ends, ends[1:])]
    own = [gap - (s["forward"] + s["backward"] + s["optimizer"] + prev.get("ema", 0.0))
           for gap, prev, s in zip(gaps, steps, steps[1:])]
    return statistics.median(gaps[warmup:]), statistics.median(own[warmup:])


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
        x, y, _ = module.prepare_batch(batch)
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
    from vfusion.experiment import load_experiment_config
    from vfusion.utils.quiet import quiet_third_party

    quiet_third_party()
    cfg = load_experiment_config(a.config, ["model.base.pretrained=null", "train.accelerator=cpu", "train.devices=1",
                                 "train.sample_every_n_steps=0", *a.overrides])
    spec_info = {"in_channels": 3, "sample_size": int(cfg.data.resolution), "num_frames": int(cfg.data.num_frames),
                 "num_classes": 4 if cfg.data.class_conditional else 0, "class_names": []}
    batches = _batches(spec_info, int(cfg.data.batch_size), a.steps)
    times = {"lightning": [], "bare": []}
    own: list[float] = []
    for r in range(a.rounds):
        for side, fn in (("lightning", lightning_steps), ("bare", bare_steps)):
            got = fn(cfg, spec_info, batches, a.warmup)
            if side == "lightning":
                got, trainer_own = got
                own.append(trainer_own)
            times[side].append(got)
            extra = f"  (the trainer's own work: {own[-1] * 1000:.1f} ms)" if side == "lightning" else ""
            print(f"round {r + 1}/{a.rounds} {side:<9}: {got * 1000:8.1f} ms/step{extra}", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    overhead = med["lightning"] / med["bare"] - 1.0
    paired = [lt / bt - 1.0 for lt, bt in zip(times["lightning"], times["bare"])]
    own_ms = statistics.median(own) * 1000
    own_share = statistics.median([o / (lt - o) for o, lt in zip(own, times["lightning"])])
    print(f"\n{cfg.model.name}, batch {cfg.data.batch_size} x {cfg.data.num_frames} frames at "
          f"{cfg.data.resolution} px, {torch.get_num_threads()} threads")
    print(f"  bare loop   {med['bare'] * 1000:8.1f} ms/step")
    print(f"  Lightning   {med['lightning'] * 1000:8.1f} ms/step")
    print(f"  overhead    {overhead * 100:+8.1f} %  side by side (per round: "
          f"{', '.join(f'{x * 100:+.1f}' for x in paired)} %; the spread is machine noise)")
    print(f"  trainer's own work {own_ms:.1f} ms/step = {own_share * 100:+.1f} % of the step's shared work, "
          "measured inside the same steps (target: at most +5 %)")
    if a.json:
        from vfusion.utils.io import atomic_write_json

        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(a.json), {
            "config": a.config, "overrides": a.overrides, "model": str(cfg.model.name),
            "batch": int(cfg.data.batch_size), "frames": int(cfg.data.num_frames),
            "resolution": int(cfg.data.resolution), "threads": torch.get_num_threads(), "steps": a.steps,
            "warmup": a.warmup, "rounds": a.rounds, "ms_per_step": {k: [v * 1000 for v in vs] for k, vs in times.items()},
            "median_ms": {k: v * 1000 for k, v in med.items()}, "overhead": overhead, "overhead_per_round": paired,
            "trainer_own_ms_per_round": [o * 1000 for o in own], "trainer_own_ms": own_ms,
            "trainer_own_overhead": own_share,
            "command": "python experiments/bench_trainer.py " + " ".join(argv if argv is not None else [])})
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
