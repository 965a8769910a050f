"""Benchmark: the main job's training step under the speed switches, and where its time goes.

The step is the main job's (``--config``): the project's module (``runner.build_module``) and its
diffusion loss on a batch of the config's shape, backward, and an AdamW step. Variants, each in its own
process so compile caches and thread pools do not leak between them:

- ``fp32``: the default;
- ``channels_last``: ``train.channels_last=true`` (convolution weights in channels-last order);
- ``compile``: ``train.compile=true`` (``torch.compile``, inductor; the compile time is reported apart);
- ``bf16``: ``train.precision=bf16-mixed`` (autocast to bfloat16, as the trainer runs it);
- ``threads1``: the default with one intra-op thread instead of all cores.

Rounds alternate the variants; each figure is the fastest step of a round, and the median over
rounds. The default variant is also profiled (``torch.profiler``): the operators with the largest share
of the step's CPU time.

    python experiments/bench_step_options.py --rounds 2 --json experiments/results/bench_step_options.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

VARIANTS = {"fp32": [], "channels_last": ["train.channels_last=true"], "compile": ["train.compile=true"],
            "bf16": ["train.precision=bf16-mixed"], "threads1": []}


def _setup(config: str, variant: str, overrides=()):
    from vfusion.experiment import load_experiment_config
    from vfusion.training.runner import build_module, shape_facts
    from vfusion.training.switches import apply_switches

    cfg = load_experiment_config(config, ["model.base.pretrained=null", *overrides, *VARIANTS[variant]])
    spec_info = shape_facts(cfg)
    torch.manual_seed(0)
    module = build_module(cfg, spec_info)
    apply_switches(module, cfg.train)
    g = torch.Generator().manual_seed(0)
    b = int(cfg.data.batch_size)
    x = torch.rand(b, spec_info["in_channels"], spec_info["num_frames"], spec_info["sample_size"],
                   spec_info["sample_size"], generator=g) * 2 - 1
    y = torch.randint(0, max(int(spec_info["num_classes"]), 1), (b,), generator=g)
    return cfg, module, (x, y)


def worker(config: str, variant: str, steps: int, warmup: int, profile: bool, overrides=()) -> dict:
    from vfusion.training.switches import autocast

    if variant == "threads1":
        torch.set_num_threads(1)
    cfg, module, batch = _setup(config, variant, overrides)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)
    module.train()

    def step():
        with autocast(cfg.train.precision, "cpu"):
            loss = module.diffusion_loss(*batch)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    start = time.perf_counter()
    step()  # the first step pays compilation, where there is one
    first = time.perf_counter() - start
    times = []
    for _ in range(warmup + steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    out = {"variant": variant, "threads": torch.get_num_threads(), "first_step_s": first,
           "step_s": min(times[warmup:]), "median_step_s": statistics.median(times[warmup:])}
    if profile:
        from torch.profiler import ProfilerActivity, profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                step()
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
        out["profile_top_ops"] = [{"op": e.key, "share": e.self_cpu_time_total / total, "calls": e.count // 3}
                                  for e in top]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/embedded.yaml")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", default=None)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.config, a.worker, a.steps, a.warmup, a.profile, a.overrides)))
        return 0
    variants = a.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(a.rounds):
        for v in variants:
            cmd = [sys.executable, __file__, "--worker", v, "--config", a.config, "--steps", str(a.steps),
                   "--warmup", str(a.warmup), *a.overrides] + (["--profile"] if v == "fp32" and r == 0 else [])
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                raise RuntimeError(f"variant {v} failed:\n{proc.stderr[-3000:]}")
            runs[v].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}/{a.rounds} {v:<14} {runs[v][-1]['step_s'] * 1e3:8.1f} ms/step "
                  f"(first step {runs[v][-1]['first_step_s']:.1f} s)", flush=True)
    med = {v: {"step_s": statistics.median(x["step_s"] for x in rs),
               "first_step_s": statistics.median(x["first_step_s"] for x in rs), "threads": rs[0]["threads"]}
           for v, rs in runs.items()}
    ref = med.get("fp32", next(iter(med.values())))["step_s"]
    print(f"\n{'variant':<14} {'step [ms]':>10} {'x fp32':>7} {'first step [s]':>15}")
    for v, m in med.items():
        m["speedup_vs_fp32"] = ref / m["step_s"]
        print(f"{v:<14} {m['step_s'] * 1e3:>10.1f} {m['speedup_vs_fp32']:>7.2f} {m['first_step_s']:>15.1f}")
    top = runs.get("fp32", [{}])[0].get("profile_top_ops", [])
    if top:
        print("\nfp32 step, largest self CPU time shares:")
        for e in top:
            print(f"  {100 * e['share']:5.1f}%  {e['op']}  ({e['calls']} calls/step)")
    if a.json:
        from vfusion.utils.io import atomic_write_json

        atomic_write_json(Path(a.json), {
            "command": "python experiments/bench_step_options.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "config": a.config, "cpu": torch.backends.cpu.get_cpu_capability(), "median": med, "runs": runs,
            "profile_top_ops": top})
    return 0


if __name__ == "__main__":
    sys.exit(main())
