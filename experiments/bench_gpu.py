"""Benchmark for a GPU machine: training-step time, peak memory, throughput and MFU of each model at a
study's sizes, with and without bf16 autocast and torch.compile.

For each model of the study (one cell per model: the first cell that uses it, seed 0, built at the
study's sizes; a base the study pretrains in stage 1 is built fresh with the same architecture) and
each variant (``fp32``, ``bf16``, ``compile``, ``bf16+compile``):

- **step time**: a bare training step, the LightningModule's ``diffusion_loss`` forward under the
  variant's autocast (:func:`vfusion.training.switches.autocast`, what ``train.precision`` makes the
  trainer do), backward, gradient clipping, AdamW (fused on CUDA: ``train.optim.fused=auto``), the lr
  schedule and the EMA update; median over the steps after a warm-up (compilation happens there),
  the device synchronised around each step;
- **peak memory**: ``torch.cuda.max_memory_allocated`` over the timed steps (on the CPU: not measured
  here; ``experiments/bench_core.py`` measures CPU memory in separate processes);
- **throughput**: frames per second (clips x frames / step time) and, for the DiT, tokens per second;
- **MFU**: FLOPs of one step counted with ``torch.utils.flop_counter`` (forward + backward of the loss,
  :func:`vfusion.training.flops.train_step_flops`, counted once in fp32 before compiling) / step time /
  the device's peak for the variant's dtype. Peaks (dense, no sparsity) are looked up from the device
  name for common data-centre GPUs, or given with ``--peak-tflops`` (bf16) and ``--peak-tflops-fp32``.
  The fp32 variant is divided by the TF32 peak when cuDNN may use TF32 for convolutions (PyTorch's
  default), else by the plain fp32 peak; the JSON says which.

On a GPU machine, with the UCF-101 study's sizes (128 px, 16 frames, batch 8; DiT-S) and its 101 classes:

    python experiments/bench_gpu.py --study configs/studies/factorial_ucf101.yaml --num-classes 101 \\
        --json experiments/results/bench_gpu.json

On the CPU it runs in seconds at toy sizes (``--tiny``: 16 px, 4 frames, narrow networks), which is
how its test checks it: ``python experiments/bench_gpu.py --tiny --steps 4 --warmup 1``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

VARIANTS = {"fp32": ("32-true", False), "bf16": ("bf16-mixed", False), "compile": ("32-true", True),
            "bf16+compile": ("bf16-mixed", True)}

# dense peak TFLOP/s by device-name fragment: (bf16/fp16 tensor, tf32 tensor, fp32 non-tensor). Vendor data sheets.
PEAKS = {"H200": (989.4, 494.7, 66.9), "H100 PCIe": (756.0, 378.0, 51.2), "H100": (989.4, 494.7, 66.9),
         "A100": (312.0, 156.0, 19.5), "L40S": (362.1, 181.0, 91.6), "L4": (121.0, 60.0, 30.3),
         "A10G": (70.0, 35.0, 31.2), "A10": (125.0, 62.5, 31.2)}

TINY = ["data.resolution=16", "data.num_frames=4", "data.batch_size=2",
        "model.base.block_out_channels=[8,16]", "model.base.norm_num_groups=4", "model.base.attention=false",
        "model.residual.block_out_channels=[8,16]", "model.residual.norm_num_groups=4",
        "model.residual.frame_embed_dim=8", "model.video_unet.attention_heads=2",
        "model.dit.size=tiny", "model.dit.hidden_size=16", "model.dit.depth=2", "model.dit.num_heads=2",
        "model.dit.patch_size=4", "model.residual.temporal_heads=2"]


def device_peaks(device: torch.device, bf16: float | None, fp32: float | None) -> dict:
    """Peak TFLOP/s of ``device`` for each dtype: the ``--peak-tflops*`` values, else the table."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    table = next((v for k, v in PEAKS.items() if k in name), None) if device.type == "cuda" else None
    peaks = {"bf16": bf16 or (table[0] if table else None), "tf32": table[1] if table else None,
             "fp32": fp32 or (table[2] if table else None)}
    if fp32:
        peaks["tf32"] = None  # the user's figure is the one to divide by
    return {"device_name": name, "peaks_tflops": peaks, "source": "--peak-tflops" if bf16 or fp32 else
            ("table" if table else "unknown")}


def _fp32_peak(peaks: dict, device: torch.device) -> tuple[float | None, str]:
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32 and peaks["tf32"]:
        return peaks["tf32"], "tf32 (cuDNN convolutions may use TF32)"
    return peaks["fp32"], "fp32"


def model_configs(study_path: str, models: list[str], overrides: list[str]) -> dict:
    """``{model name: run config}``: the first cell of the study that uses each model, seed 0."""
    from vfusion.studies.spec import expand, load_study, run_config

    study = load_study(study_path, [])
    out = {}
    for plan in expand(study):
        cfg = run_config(study, plan)
        name = str(cfg.model.name)
        if name in models and name not in out and plan.seed == study.spec.seeds[0]:
            from vfusion.config import to_dict
            from vfusion.experiment import resolve_config

            cfg.model.base.pretrained = None  # stage 1's base: the same architecture, built fresh
            out[name] = resolve_config(to_dict(cfg), overrides=list(overrides))
    missing = [m for m in models if m not in out]
    if missing:
        raise SystemExit(f"bench_gpu: the study has no cell with model {missing}; use --models")
    return out


def _spec_info(cfg, num_classes: int) -> dict:
    return {"in_channels": 3, "sample_size": int(cfg.data.resolution), "num_frames": int(cfg.data.num_frames),
            "num_classes": int(num_classes) if cfg.data.class_conditional else 0, "class_names": []}


def _batch(cfg, info, device):
    g = torch.Generator().manual_seed(0)
    b = int(cfg.data.batch_size)
    x = torch.rand(b, 3, info["num_frames"], info["sample_size"], info["sample_size"], generator=g) * 2 - 1
    y = torch.randint(0, max(info["num_classes"], 1), (b,), generator=g)
    return x.to(device), y.to(device)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_one(cfg, info, variant: str, device: torch.device, steps: int, warmup: int, compile_backend: str) -> dict:
    """One (model, variant) row: step times, peak memory, FLOPs per step."""
    from vfusion.training.flops import train_step_flops
    from vfusion.training.runner import build_module
    from vfusion.training.switches import apply_switches, autocast

    precision, compiled = VARIANTS[variant]
    cfg = cfg.copy()
    cfg.train.precision, cfg.train.compile, cfg.train.compile_backend = precision, compiled, compile_backend
    torch.manual_seed(0)
    module = build_module(cfg, info).to(device)
    module.train()
    batch = _batch(cfg, info, device)
    flops = train_step_flops(module, batch)  # fp32, before compiling: the model's FLOPs
    apply_switches(module, cfg.train)
    opt_cfg = module.configure_optimizers()
    opt, sched = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
    params = [p for g in opt.param_groups for p in g["params"]]
    if module.ema is not None:
        module.ema.to(device)
    clip = float(cfg.train.optim.grad_clip or 0)
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        x, y, _ = module.prepare_batch(batch)
        with autocast(precision, device):
            loss = module.diffusion_loss(x, y)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        sched.step()
        if module.ema is not None:
            module.ema.step(module.model.parameters())
        _sync(device)
        times.append(time.perf_counter() - t0)
        if i == warmup - 1 and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)  # the compile / first-step allocations are not the step's
    step_s = statistics.median(times[warmup:])
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"step_ms": step_s * 1000, "first_step_s": times[0], "peak_mb": peak, "flops_per_step": flops,
            "loss_finite": bool(torch.isfinite(loss).item()), "fused_adamw": bool(opt.defaults.get("fused"))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--study", default="configs/studies/factorial_ucf101.yaml")
    p.add_argument("--models", default="videofusion,video_unet,dit")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--num-classes", type=int, default=101, help="the dataset's classes (UCF-101: 101)")
    p.add_argument("--steps", type=int, default=30, help="steps per row, warm-up included (default 30)")
    p.add_argument("--warmup", type=int, default=10, help="steps left out of the median (default 10)")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--compile-backend", default="inductor")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak (default: table)")
    p.add_argument("--peak-tflops-fp32", type=float, default=None, help="the device's fp32 peak (default: table)")
    p.add_argument("--tiny", action="store_true", help="toy sizes, for a CPU check of the script")
    p.add_argument("--json", default=None, help="also write the rows here")
    p.add_argument("overrides", nargs="*", help="key=value overrides of every model's config")
    a = p.parse_args(argv)
    variants = [v for v in a.variants.split(",") if v]
    bad = [v for v in variants if v not in VARIANTS]
    if bad or a.steps < a.warmup + 1 or a.warmup < 1:
        print(f"bench_gpu: unknown variant {bad} (choose from {', '.join(VARIANTS)})" if bad else
              "bench_gpu: need --warmup >= 1 and --steps > --warmup", file=sys.stderr)
        return 2
    from vfusion.utils.quiet import quiet_third_party

    quiet_third_party()
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    models = [m for m in a.models.split(",") if m]
    overrides = ["train.sample_every_n_steps=0", *(TINY if a.tiny else []), *a.overrides]
    cfgs = model_configs(a.study, models, overrides)
    dev = device_peaks(device, a.peak_tflops, a.peak_tflops_fp32)
    fp32_peak, fp32_kind = _fp32_peak(dev["peaks_tflops"], device)
    rows = []
    print(f"{dev['device_name']} ({device.type}); torch {torch.__version__}; peaks (TFLOP/s) {dev['peaks_tflops']}")
    print(f"{'model':<12} {'variant':<13} {'ms/step':>9} {'peak MB':>9} {'frames/s':>10} {'tokens/s':>11} "
          f"{'GFLOP/step':>11} {'MFU':>7}")
    for name in models:
        cfg = cfgs[name]
        info = _spec_info(cfg, a.num_classes)
        frames = int(cfg.data.batch_size) * info["num_frames"]
        tokens_per_frame = (info["sample_size"] // int(cfg.model.dit.patch_size)) ** 2 // \
            int(cfg.model.dit.temporal_patch_size) if name == "dit" else None
        for variant in variants:
            r = bench_one(cfg, info, variant, device, a.steps, a.warmup, a.compile_backend)
            bf16 = VARIANTS[variant][0] != "32-true"
            peak = dev["peaks_tflops"]["bf16"] if bf16 else fp32_peak
            step_s = r["step_ms"] / 1000
            r.update(model=name, variant=variant, batch=int(cfg.data.batch_size), frames=info["num_frames"],
                     resolution=info["sample_size"], frames_per_s=frames / step_s,
                     tokens_per_s=frames * tokens_per_frame / step_s if tokens_per_frame else None,
                     peak_tflops_used=peak, peak_kind="bf16" if bf16 else fp32_kind,
                     mfu=r["flops_per_step"] / step_s / (peak * 1e12) if peak else None)
            rows.append(r)
            mem = f"{r['peak_mb']:9.0f}" if r["peak_mb"] is not None else f"{'-':>9}"
            tok = f"{r['tokens_per_s']:11.0f}" if r["tokens_per_s"] else f"{'-':>11}"
            mfu = f"{r['mfu'] * 100:6.1f}%" if r["mfu"] is not None else f"{'-':>7}"
            print(f"{name:<12} {variant:<13} {r['step_ms']:9.1f} {mem} {r['frames_per_s']:10.1f} {tok} "
                  f"{r['flops_per_step'] / 1e9:11.2f} {mfu}", flush=True)
    if a.json:
        from vfusion.utils.io import atomic_write_json

        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(a.json), {
            "benchmark": "bare training step per model and variant", "study": a.study, "device": str(device),
            **dev, "fp32_peak_kind": fp32_kind, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "steps": a.steps, "warmup": a.warmup, "tiny": a.tiny, "overrides": a.overrides, "rows": rows,
            "command": "python experiments/bench_gpu.py " + " ".join(argv if argv is not None else sys.argv[1:])})
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
