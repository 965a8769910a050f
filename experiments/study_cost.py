"""Projected compute of a study, from FLOPs counted by PyTorch: what a GPU study will cost before it runs.

For every grid cell of a study file it counts, with ``torch.utils.flop_counter``,

- the FLOPs of one training step (forward + backward of the diffusion loss, as the FLOPs budget
  of ``vfusion study`` counts them), and from the study's budget the steps and the training FLOPs
  of a run;
- the FLOPs of one sampling step per clip (a forward pass of the denoiser; twice that with
  classifier-free guidance), times the sampler's steps and the clips the evaluation generates;

plus stage 1 (the base UNet's image pretraining) once per seed or once per study. The counts are
made on a batch of one clip and multiplied by the batch size: every layer of these models costs the
same per clip (no batch-dependent work), which ``tests/test_study_cost.py`` checks on the embedded
study. The detectors of the evaluation (I3D, Inception) are not counted: at 2048 clips they cost
about 2e14 FLOPs, far below the training.

GPU-hours = FLOPs / (peak FLOP/s of the device for the dtype x MFU). The MFU is an assumption you
pass (``--mfu``; default 0.3) until ``experiments/bench_gpu.py`` has measured it on your device.

    python experiments/study_cost.py --config configs/studies/factorial_ucf101.yaml \\
        --peak-tflops 989 --mfu 0.3 --json experiments/results/factorial_gpu/cost_ucf101.json

The counts need no dataset: they are made on the meta device from the shapes the config gives (a latent
run reads its VAE's ``config.json``), in seconds whatever the models' size.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


def _one_clip(cfg):
    c = cfg.copy()
    c.data.batch_size = 1
    return c


def study_cost(config: str, overrides=()) -> dict:
    """Per-cell and total FLOPs of a study (see the module docstring)."""
    from vfusion.studies.spec import expand, flops_budget_steps, load_study, run_config, stage1_config
    from vfusion.training.flops import denoise_flops, device_count, run_step_flops
    from vfusion.training.runner import stage1_config as stage1_run_config

    study = load_study(config, list(overrides))
    spec = study.spec
    plans = expand(study)
    seeds = list(spec.seeds)
    cells, seen = [], {}
    for plan in plans:
        key = tuple(plan.labels.values())
        if key in seen:
            seen[key]["runs"] += 1
            continue
        cfg = run_config(study, plan)
        counted = cfg.copy()
        if plan.stage1_dir is not None:  # counted on the architecture stage 1 trains, as the budget does
            counted.model.base.pretrained = stage1_config(study, plan.seed).model.base.pretrained
        batch = int(cfg.data.batch_size)
        per_step = run_step_flops(_one_clip(counted)) * batch
        if spec.budget.flops is not None:
            steps = flops_budget_steps(spec.budget.flops, per_step)
        elif spec.budget.steps is not None:
            steps = int(spec.budget.steps)
        else:
            raise SystemExit(f"study_cost: study '{study.name}' has a minutes-only budget; its steps (and FLOPs) "
                             "depend on the machine: give it budget.steps or budget.flops")
        clips = max(int(cfg.sample.num_videos), int(cfg.eval.num_videos or 0) if cfg.eval.metrics else 0)
        guided = 2 if float(cfg.sample.guidance_scale) != 1.0 else 1
        per_clip_step = denoise_flops(counted, batch_size=1) * guided
        cell = {"cell": "_".join(key), "model": str(cfg.model.name), "uses_stage1": plan.stage1_dir is not None,
                "batch_size": batch, "devices": device_count(cfg.train), "train_flops_per_step": per_step,
                "train_steps": steps, "train_flops": per_step * steps,
                "sample_flops_per_clip_step": per_clip_step, "sample_steps": int(cfg.sample.steps),
                "sample_clips": clips, "sample_flops": per_clip_step * int(cfg.sample.steps) * clips, "runs": 1}
        seen[key] = cell
        cells.append(cell)
    stage1 = None
    if any(c["uses_stage1"] for c in cells):
        s1 = stage1_run_config(stage1_config(study, seeds[0]))
        per_step = run_step_flops(_one_clip(s1)) * int(s1.data.batch_size)
        count = len(seeds) if spec.stage1.per_seed else 1
        stage1 = {"train_flops_per_step": per_step, "steps": int(s1.train.max_steps), "count": count,
                  "flops": per_step * int(s1.train.max_steps) * count,
                  "frames_per_step": int(s1.data.batch_size) * int(s1.data.num_frames)}
    total = sum((c["train_flops"] + c["sample_flops"]) * c["runs"] for c in cells) + (stage1["flops"] if stage1 else 0)
    return {"study": study.name, "config": str(config), "seeds": seeds, "cells": cells, "stage1": stage1,
            "total_flops": total}


def gpu_hours(flops: float, peak_tflops: float, mfu: float) -> float:
    return flops / (peak_tflops * 1e12 * mfu) / 3600.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="study YAML, e.g. configs/studies/factorial_ucf101.yaml")
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="the device's peak TFLOP/s for the training dtype (default 989: H100 SXM, dense bf16)")
    p.add_argument("--mfu", type=float, default=0.3, help="assumed model FLOPs utilisation (default 0.3)")
    p.add_argument("--json", default=None, help="also write the counts and the projection here")
    p.add_argument("overrides", nargs="*", help="key=value overrides of every run, as for vfusion study")
    a = p.parse_args(argv)
    if not 0 < a.mfu <= 1 or a.peak_tflops <= 0:
        print("study_cost: --mfu must be in (0, 1] and --peak-tflops > 0", file=sys.stderr)
        return 2
    from vfusion.errors import UserError

    try:
        cost = study_cost(a.config, a.overrides)
    except UserError as err:
        print(f"study_cost: {err}", file=sys.stderr)
        return 2
    cost["assumed"] = {"peak_tflops": a.peak_tflops, "mfu": a.mfu}
    h = lambda f: gpu_hours(f, a.peak_tflops, a.mfu)  # noqa: E731
    print(f"study {cost['study']}: seeds {cost['seeds']}; GPU-hours at {a.peak_tflops:g} TFLOP/s x MFU {a.mfu:g}")
    print(f"{'cell':<16} {'model':<11} {'FLOP/step':>10} {'steps':>8} {'train FLOP':>11} {'sample FLOP':>12} "
          f"{'GPU-h/run':>10} {'runs':>5}")
    for c in cost["cells"]:
        c["gpu_hours_per_run"] = h(c["train_flops"] + c["sample_flops"])
        print(f"{c['cell']:<16} {c['model']:<11} {c['train_flops_per_step']:>10.3e} {c['train_steps']:>8} "
              f"{c['train_flops']:>11.3e} {c['sample_flops']:>12.3e} {c['gpu_hours_per_run']:>10.2f} {c['runs']:>5}")
    if cost["stage1"]:
        s = cost["stage1"]
        s["gpu_hours"] = h(s["flops"])
        print(f"stage 1: {s['count']} x {s['steps']} steps of {s['train_flops_per_step']:.3e} FLOP "
              f"({s['frames_per_step']} frames) = {s['flops']:.3e} FLOP, {s['gpu_hours']:.2f} GPU-h")
    cost["gpu_hours_total"] = h(cost["total_flops"])
    print(f"total: {cost['total_flops']:.3e} FLOP = {cost['gpu_hours_total']:.1f} GPU-hours "
          f"({math.ceil(cost['gpu_hours_total'] / 24)} GPU-days, rounded up)")
    if a.json:
        from vfusion.utils.io import atomic_write_json

        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(a.json), cost)
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
