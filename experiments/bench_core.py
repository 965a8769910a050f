"""Benchmark: VideoFusion's cost versus the same base UNet run on every frame.

Side by side, same batch and frame count (method.md, "Cost structure"):
  * training step (forward + backward + AdamW) time and peak memory of
    (a) VideoFusion: base UNet once per clip + residual UNet on the other T−1 frames, and
    (b) the base UNet applied to all T frames (a per-frame video model of the base's size);
  * both networks' parameter counts, and the measured per-frame cost ratio C_res / C_base,
    from which the cost model predicts (C_base + (T−1)·C_res) / (T·C_base);
  * sampling wall time versus steps × one denoiser call (pipeline overhead).

Peak memory: CUDA max_memory_allocated on a GPU; on the CPU each variant runs in its own
subprocess and reports its peak RSS above the process baseline after model construction.

    python experiments/bench_core.py --config configs/embedded.yaml --batch 4 --frames 16
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common, also when loaded by path
from bench_common import rss_mb as _peak_rss_mb  # noqa: E402  (this process's own peak, not its parent's)


def _build(cfg_path, overrides, frames, size):
    from vfusion.experiment import load_experiment_config
    from vfusion.models.base_generator import BaseGenerator, base_network
    from vfusion.experiment import as_experiment
    from vfusion.models.videofusion import VideoFusion

    cfg = load_experiment_config(cfg_path, overrides + [f"data.num_frames={frames}", f"data.resolution={size}"])
    spec = as_experiment(cfg).model_spec(3, size, frames, 0)
    return cfg, VideoFusion.build(cfg, spec), BaseGenerator(base_network(cfg.model.base, spec), 0)


def _per_frame(base):
    from vfusion.layout import fold_frames, unfold_frames

    def run(x, t):
        n = x.shape[2]
        return unfold_frames(base(fold_frames(x), t.repeat_interleave(n)), n)
    return run


def _time_train(fn, params, x, t, device, iters, warmup=2):
    opt = torch.optim.AdamW(params, lr=1e-4)
    for i in range(warmup + iters):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        loss = (fn(x, t) - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return (time.perf_counter() - start) / iters


def _time_fwd(fn, x, t, device, iters, warmup=2):
    with torch.no_grad():
        for i in range(warmup + iters):
            if i == warmup:
                _sync(device)
                start = time.perf_counter()
            fn(x, t)
    _sync(device)
    return (time.perf_counter() - start) / iters


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _fwd_bwd(fn):
    def run(*inputs):
        out = fn(*inputs)
        out.float().pow(2).mean().backward()
    return run


def breakdown(vf, base_net, b: int, n: int, s: int, device, iters: int) -> dict:
    """Where VideoFusion's training step goes, against the base UNet on all frames (forward + backward
    of each part, and AdamW over each model's parameters), every part timed once per round, rounds
    interleaved so machine load hits all parts alike; medians over ``iters`` rounds, in ms.

    ``base_key``: the base on the B keyframes; ``residual``: the residual generator on the B(T-1) other
    frames; ``glue``: VideoFusion's full step minus those two (frame indexing, the ε conversion, the
    composition and concatenation); ``base_all``: the base on all B·T frames; ``adamw_*``: one optimizer
    step over that model's parameters (gradients set)."""
    import statistics

    from vfusion.layout import fold_frames
    from vfusion.models.unet2d import count_parameters

    vf.train()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, 3, n, s, s, generator=g).to(device)
    t = torch.randint(0, 1000, (b,), generator=g).to(device)
    key = x[:, :, vf.keyframe].contiguous()
    others = x.index_select(2, vf.other_frames.to(device)).contiguous()
    frames, t_all = fold_frames(x).contiguous(), t.repeat_interleave(n)
    parts = {
        "videofusion": lambda: _fwd_bwd(vf)(x, t),
        "base_key": lambda: _fwd_bwd(vf.base)(key, t),
        "residual": lambda: _fwd_bwd(lambda z, tt: vf.residual(z, tt, vf.other_frames))(others, t),
        "base_all": lambda: _fwd_bwd(base_net)(frames, t_all),
    }
    opts = {"adamw_videofusion": torch.optim.AdamW(vf.parameters(), lr=1e-4),
            "adamw_base": torch.optim.AdamW(base_net.parameters(), lr=1e-4)}
    for p in [*vf.parameters(), *base_net.parameters()]:
        p.grad = torch.zeros_like(p)
    times: dict[str, list[float]] = {k: [] for k in [*parts, *opts]}
    for r in range(iters + 2):
        for name, fn in [*parts.items(), *((k, o.step) for k, o in opts.items())]:
            if name in parts:  # gradients kept allocated (zeroed), so every optimizer step updates every weight
                vf.zero_grad(set_to_none=False)
                base_net.zero_grad(set_to_none=False)
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if r >= 2:
                times[name].append((time.perf_counter() - t0) * 1000)
    ms = {k: statistics.median(v) for k, v in times.items()}
    ms["glue"] = ms["videofusion"] - ms["base_key"] - ms["residual"]
    ms["params"] = {"base": count_parameters(vf.base)["total"], "residual": count_parameters(vf.residual)["total"]}
    return ms


def single(args) -> dict:
    """One variant's training-step time and peak memory (run in its own process on CPU)."""
    device = torch.device(args.device)
    cfg, vf, base = _build(args.config, args.overrides, args.frames, args.size)
    model = vf if args.variant == "videofusion" else base
    fn = model if args.variant == "videofusion" else _per_frame(base)
    model.to(device).train()
    x = torch.randn(args.batch, 3, args.frames, args.size, args.size, device=device)
    t = torch.randint(0, 1000, (args.batch,), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_mem = torch.cuda.memory_allocated()
    rss0 = _peak_rss_mb()
    step = _time_train(fn, [p for p in model.parameters()], x, t, device, args.iters)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base_mem) / 2**20
    else:
        peak = _peak_rss_mb() - rss0
    return {"variant": args.variant, "train_step_s": step, "peak_mem_mb": peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/embedded.yaml")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--variant", choices=("videofusion", "per_frame"), help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    if args.variant:
        print(json.dumps(single(args)))
        return

    from vfusion.diffusion.loop_settings import LoopSettings
    from vfusion.diffusion.sampling import sample_loop
    from vfusion.models.unet2d import count_parameters

    device = torch.device(args.device)
    cfg, vf, base = _build(args.config, args.overrides, args.frames, args.size)
    vf.to(device)
    n_base, n_res = count_parameters(vf.base)["total"], count_parameters(vf.residual)["total"]

    # per-frame forward cost of each network (batch x frames images), for the cost model
    b, n, s = args.batch, args.frames, args.size
    imgs = torch.randn(b * n, 3, s, s, device=device)
    tt = torch.randint(0, 1000, (b * n,), device=device)
    c_base = _time_fwd(lambda x, t: vf.base(x, t), imgs, tt, device, args.iters)
    idx = torch.arange(n, device=device)
    c_res = _time_fwd(lambda x, t: vf.residual(x.view(b, n, 3, s, s).transpose(1, 2), t[:b], idx), imgs, tt,
                      device, args.iters)
    ratio = c_res / c_base
    predicted = (1 + (n - 1) * ratio) / n

    results = {}
    for variant in ("videofusion", "per_frame"):
        cmd = [sys.executable, __file__, "--variant", variant, "--config", args.config, "--batch", str(b),
               "--frames", str(n), "--size", str(s), "--iters", str(args.iters), "--device", args.device,
               *args.overrides]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        results[variant] = json.loads(out)

    # sampling overhead: full DDIM loop vs steps x one denoiser call
    vf.eval()
    from vfusion.experiment import as_experiment

    spec = as_experiment(cfg).model_spec(3, s, n, 0)
    x = torch.randn(b, 3, n, s, s, device=device)
    t = torch.full((b,), 500, device=device, dtype=torch.long)
    one_call = _time_fwd(lambda x, t: vf(x, t), x, t, device, args.iters)
    _sync(device)
    start = time.perf_counter()
    sample_loop(vf, spec.process, spec.noise, (b, 3, n, s, s),
                LoopSettings("ddim", args.sample_steps, device=device, progress=False),
                generator=torch.Generator(device=device).manual_seed(0))
    _sync(device)
    loop = time.perf_counter() - start
    overhead = loop / (args.sample_steps * one_call) - 1

    vf_r, pf_r = results["videofusion"], results["per_frame"]
    print(f"device: {device} ({torch.cuda.get_device_name(0) if device.type == 'cuda' else f'{torch.get_num_threads()} CPU threads'})")
    print(f"batch {b}, {n} frames, {s}x{s}, config {args.config}")
    print(f"parameters: base UNet {n_base / 1e6:.3f}M, residual generator {n_res / 1e6:.3f}M "
          f"({n_res / n_base:.2f}x)")
    print(f"per-frame forward cost C_res / C_base (measured): {ratio:.3f}")
    print(f"cost model (C_base + (T-1) C_res) / (T C_base): {predicted:.3f}x")
    print(f"train step  VideoFusion {vf_r['train_step_s'] * 1e3:8.1f} ms | base UNet on all frames "
          f"{pf_r['train_step_s'] * 1e3:8.1f} ms | ratio {vf_r['train_step_s'] / pf_r['train_step_s']:.3f}x")
    print(f"peak memory VideoFusion {vf_r['peak_mem_mb']:8.1f} MB | base UNet on all frames "
          f"{pf_r['peak_mem_mb']:8.1f} MB | ratio {vf_r['peak_mem_mb'] / max(pf_r['peak_mem_mb'], 1e-9):.3f}x")
    print(f"sampling: {args.sample_steps} DDIM steps {loop:.3f} s vs {args.sample_steps} x one call "
          f"{args.sample_steps * one_call:.3f} s -> pipeline overhead {overhead * 100:+.1f}%")

    # where the training step's time goes (the gap between the measured ratio and the cost model)
    vf.train()
    ms = breakdown(vf, base.to(device), b, n, s, device, args.iters)
    measured = (ms["videofusion"] + ms["adamw_videofusion"]) / (ms["base_all"] + ms["adamw_base"])
    accounted = (ms["base_key"] + ms["residual"] + ms["adamw_videofusion"]) / (ms["base_all"] + ms["adamw_base"])
    train_model = (ms["base_all"] / n + ms["residual"]) / ms["base_all"]
    key_eff = ms["base_key"] * n / ms["base_all"]
    print(f"\nbreakdown of one training step, ms (median of {args.iters} interleaved rounds):")
    for k in ("videofusion", "base_key", "residual", "glue", "adamw_videofusion", "base_all", "adamw_base"):
        print(f"  {k:<18} {ms[k]:8.1f}")
    print(f"  measured step ratio (fwd + bwd + AdamW)                    {measured:.3f}x")
    print(f"  the same from its parts (base_key + residual + AdamW)      {accounted:.3f}x  (glue left out)")
    print(f"  cost model on fwd + bwd, base at 1/T of its all-frame cost  {train_model:.3f}x")
    print(f"  the keyframe pass costs {key_eff:.2f}x its share of the all-frame base pass (batch {b} instead of "
          f"{b * n} images)")
    if args.json:
        from pathlib import Path

        from vfusion.utils.io import atomic_write_json

        atomic_write_json(Path(args.json), {
            "config": args.config, "batch": b, "frames": n, "size": s, "iters": args.iters, "device": str(device),
            "threads": torch.get_num_threads(), "c_res_over_c_base_forward": ratio, "cost_model_forward": predicted,
            "train_step_s": {"videofusion": vf_r["train_step_s"], "per_frame": pf_r["train_step_s"]},
            "peak_mem_mb": {"videofusion": vf_r["peak_mem_mb"], "per_frame": pf_r["peak_mem_mb"]},
            "sampling_overhead": overhead, "breakdown_ms": ms, "measured_ratio_breakdown": measured,
            "accounted_ratio": accounted, "cost_model_train": train_model, "keyframe_pass_vs_share": key_eff,
            "command": "python experiments/bench_core.py " + " ".join(sys.argv[1:])})


if __name__ == "__main__":
    main()
