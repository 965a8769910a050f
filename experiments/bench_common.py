"""Shared parts of the step benchmarks: the models, one measured step, FLOP counts and the ceilings.

Every model is a pair ``(module, forward(x, t))`` on clips ``(B, 3, T, H, W)``, so the project's
models and the peers are timed by the same loop. A training step is forward, MSE to a random target,
backward and an AdamW step; a sampling step is one forward without gradients. FLOPs are counted by
``torch.utils.flop_counter`` (matrix products, convolutions, attention; 2 per multiply-add).
"""

from __future__ import annotations

import json
from contextlib import nullcontext
import resource
import subprocess
import sys
import time
import types

import torch
from torch.utils.flop_counter import FlopCounterMode

import vfusion.training.flops  # noqa: F401  (registers the FLOPs of the CPU's fused attention kernel)

PROJECT_MODELS = ("videofusion", "video_unet", "dit")
# the project's sizes in the studies: the video UNet with temporal convolutions, the DiT at about
# VideoFusion's parameter count
PROJECT_OVERRIDES = {"dit": ["model.dit.hidden_size=128", "model.dit.depth=6", "model.dit.num_heads=4"],
                     "video_unet": ["model.video_unet.temporal_layers=conv"]}


def rss_mb() -> float:
    """This process's peak resident memory in MB. On Linux VmHWM, the high-water mark of this process's own
    memory map: ``ru_maxrss`` also carries the peak of the parent it was forked from (kept across exec),
    which would hide a child's peak below a large parent's."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024.0
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def project_model(name: str, config: str, frames: int, size: int, overrides=()):
    from vfusion.experiment import load_experiment_config
    from vfusion.models.registry import build_model
    from vfusion.experiment import as_experiment

    torch.manual_seed(0)
    own = load_experiment_config(config, ["model.base.pretrained=null", *overrides])
    scale = size / int(own.data.resolution)  # the same networks at another size: attention at the same levels
    attention = []
    for net in ("base", "residual"):
        sizes = [str(round(r * scale)) for r in own.model[net].get("attention_resolutions") or []]
        if sizes:
            attention.append(f"model.{net}.attention_resolutions=[{','.join(sizes)}]")
    cfg = load_experiment_config(config, ["model.base.pretrained=null", f"model.name={name}", f"data.num_frames={frames}",
                               f"data.resolution={size}", *attention, *PROJECT_OVERRIDES.get(name, []), *overrides])
    model = build_model(cfg, as_experiment(cfg).model_spec(3, size, frames, 0))
    return model, lambda x, t: model(x, t, None)


def _unet3d(width: int, frames: int, size: int):
    from diffusers import UNet3DConditionModel

    model = UNet3DConditionModel(
        sample_size=size, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(width, 2 * width, 2 * width),
        down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8)
    return model, lambda x, t: model(x, t, encoder_hidden_states=_one_token(x, 32)).sample


def _unet_motion(width: int, frames: int, size: int):
    from diffusers import UNetMotionModel

    model = UNetMotionModel(
        sample_size=size, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(width, 2 * width, 2 * width),
        down_block_types=("CrossAttnDownBlockMotion", "CrossAttnDownBlockMotion", "DownBlockMotion"),
        up_block_types=("UpBlockMotion", "CrossAttnUpBlockMotion", "CrossAttnUpBlockMotion"),
        cross_attention_dim=32, norm_num_groups=8, motion_max_seq_length=max(32, frames),
        motion_num_attention_heads=4)

    # diffusers' motion UNet takes (B, C, T, H, W) and folds frames into the batch; the text states come
    # per frame, as AnimateDiff's pipeline repeats them
    return model, lambda x, t: model(x, t, encoder_hidden_states=_one_token(x, 32).repeat_interleave(x.shape[2], 0)).sample


def _latte(width: int, frames: int, size: int):
    from diffusers import LatteTransformer3DModel

    heads = max(1, width // 32)
    model = LatteTransformer3DModel(
        num_attention_heads=heads, attention_head_dim=width // heads, in_channels=3, out_channels=3, num_layers=3,
        sample_size=size, patch_size=2, norm_type="ada_norm_single", caption_channels=32,
        cross_attention_dim=width, video_length=frames)
    return model, lambda x, t: model(x, timestep=t, encoder_hidden_states=_one_token(x, 32)).sample


def absent_torchvision() -> None:
    """video-diffusion-pytorch imports torchvision for its GIF and dataset helpers only; PyPI's torchvision
    is a CUDA build whose operators do not load beside a CPU torch, so when it is missing or broken an
    inert stand-in lets the network itself import (it never calls torchvision)."""
    try:
        import torchvision  # noqa: F401
        return
    except Exception:
        pass

    class Absent(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return lambda *a, **k: None

    tv = Absent("torchvision")
    tv.transforms, tv.utils = Absent("torchvision.transforms"), Absent("torchvision.utils")
    sys.modules.update({"torchvision": tv, "torchvision.transforms": tv.transforms, "torchvision.utils": tv.utils})


def _vdp_unet3d(width: int, frames: int, size: int):
    absent_torchvision()
    from video_diffusion_pytorch import Unet3D

    model = Unet3D(dim=width, dim_mults=(1, 2, 2), channels=3)
    return model, lambda x, t: model(x, t)


def _one_token(x, dim: int):
    return torch.zeros(x.shape[0], 1, dim, device=x.device)


PEERS = {"unet3d": _unet3d, "unet_motion": _unet_motion, "latte": _latte, "vdp_unet3d": _vdp_unet3d}


def train_flops(model, fwd, frames: int, size: int, batch: int = 1) -> int:
    """FLOPs of one training step's forward and backward at ``batch`` clips (a real CPU step)."""
    x = torch.randn(batch, 3, frames, size, size)
    t = torch.randint(0, 1000, (batch,))
    counter = FlopCounterMode(display=False)
    with counter:
        fwd(x, t).square().mean().backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def build(name: str, width: int, config: str, frames: int, size: int, overrides=()):
    if name in PEERS:
        torch.manual_seed(0)
        return PEERS[name](width, frames, size)
    return project_model(name, config, frames, size, overrides)


def measure(spec: dict) -> dict:
    """Train and sampling step of one model at one shape, in this process (its peak memory is its own).

    The first warm-up step of each kind runs under the FLOP counter, so counting costs no extra step.
    """
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = torch.device(spec.get("device", "cpu"))
    model, fwd = build(spec["model"], int(spec.get("width", 0)), spec["config"], spec["frames"], spec["size"],
                       spec.get("overrides", ()))
    model.to(device).train()
    torch.manual_seed(1)
    x = torch.randn(spec["batch"], 3, spec["frames"], spec["size"], spec["size"], device=device)
    target, t = torch.randn_like(x), torch.randint(0, 1000, (spec["batch"],), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if cuda else rss_mb()
    warmup, iters = int(spec.get("warmup", 1)), int(spec.get("iters", 2))
    train, sample, flops = [], [], {}
    for i in range(warmup + iters):
        counter = FlopCounterMode(display=False) if i == 0 else None
        sync()
        start = time.perf_counter()
        with counter or nullcontext():
            loss = (fwd(x, t) - target).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
        sync()
        train.append(time.perf_counter() - start)
        if counter:
            flops["train"] = counter.get_total_flops()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else rss_mb() - base
    model.eval()
    with torch.no_grad():
        for i in range(warmup + iters):
            counter = FlopCounterMode(display=False) if i == 0 else None
            sync()
            start = time.perf_counter()
            with counter or nullcontext():
                fwd(x, t)
            sync()
            sample.append(time.perf_counter() - start)
            if counter:
                flops["sample"] = counter.get_total_flops()
    return {**{k: spec[k] for k in ("model", "batch", "frames", "size")}, "width": spec.get("width"),
            "params": params(model), "train_flops": int(flops["train"]), "sample_flops": int(flops["sample"]),
            "train_step_s": min(train[warmup:]), "sample_step_s": min(sample[warmup:]),
            "peak_mem_mb": peak}


def in_subprocess(spec: dict, env=None) -> dict:
    """:func:`measure` (or ``spec["kind"] == "ceilings"``: :func:`ceilings`) in a fresh Python process."""
    out = subprocess.run([sys.executable, __file__, json.dumps(spec)], capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"benchmark worker failed for {spec}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _best_rate(run, flops: float, seconds: float) -> float:
    run()
    best, spent = float("inf"), 0.0
    while spent < seconds:
        start = time.perf_counter()
        run()
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
    return flops / best


def ceilings(spec: dict) -> dict:
    """What this machine computes at best in fp32: a large matrix product and a large 3x3 convolution,
    each the fastest of repeats over ``seconds`` (FLOPs counted as the FLOP counter counts them)."""
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    n, seconds = int(spec.get("gemm_n", 2048)), float(spec.get("seconds", 3.0))
    a, b = torch.randn(n, n), torch.randn(n, n)
    gemm = _best_rate(lambda: torch.matmul(a, b), 2.0 * n**3, seconds)
    c, hw, batch = int(spec.get("conv_channels", 128)), int(spec.get("conv_size", 64)), int(spec.get("conv_batch", 8))
    conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
    x = torch.randn(batch, c, hw, hw)
    with torch.no_grad():
        conv_rate = _best_rate(lambda: conv(x), 2.0 * batch * c * c * 9 * hw * hw, seconds)
    return {"gemm_flops_per_s": gemm, "conv_flops_per_s": conv_rate, "gemm_n": n,
            "conv_shape": [batch, c, hw, hw], "threads": torch.get_num_threads()}


def machine(device: str = "cpu") -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    name = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                "CPU") if sys.platform.startswith("linux") else "CPU"
    return f"{name}, {torch.get_num_threads()} threads"


if __name__ == "__main__":
    job = json.loads(sys.argv[1])
    print(json.dumps(ceilings(job) if job.get("kind") == "ceilings" else measure(job)))
