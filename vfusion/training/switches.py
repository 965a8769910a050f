"""The training speed and memory switches a GPU user expects, applied to a built module.

- ``train.precision``: ``bf16-mixed`` / ``16-mixed`` run the networks under autocast (Lightning's precision plugin
  for the trainer, :func:`autocast` for a bare loop). Weights, AdamW's state and the EMA stay fp32 (autocast casts
  per operation), and :func:`vfusion.diffusion.process.frame_losses` computes the loss in fp32.
- ``train.compile``: ``torch.compile`` of the denoiser's forward, in place (``nn.Module.compile``), so the state
  dict, the EMA, checkpoints and the exported pipeline keep their plain parameter names.
- ``train.gradient_checkpointing``: per network (the model's pipeline components), through diffusers'
  ``enable_gradient_checkpointing``; ``train.channels_last`` and ``train.optim.fused`` (AdamW's fused kernel).

Switches apply to a training run only (:func:`vfusion.training.runner.fit`); a module built to count FLOPs or to
sample is left as it is, so a FLOPs budget counts the model's work and not the recomputation checkpointing adds.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Optional

import torch
from omegaconf import DictConfig
from torch import nn

from vfusion.config import ConfigError

# train.precision -> the autocast dtype (None: full fp32)
AUTOCAST_DTYPES = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def networks(model: nn.Module) -> dict[str, nn.Module]:
    """The model's networks by name: its pipeline components (the units a switch applies to)."""
    return dict(model.pipeline_components())


def checkpointed_networks(model: nn.Module, names: Iterable[str]) -> list[str]:
    """The network names ``train.gradient_checkpointing`` selects (``all``: every one); unknown names
    are a config error that lists the model's own."""
    nets = networks(model)
    names = [str(n) for n in names]
    if "all" in names:
        return list(nets)
    unknown = [n for n in names if n not in nets]
    if unknown:
        raise ConfigError(f"config key 'train.gradient_checkpointing' names {unknown}, which this model does not have; "
                          f"its networks are {', '.join(nets)} (or all)")
    return names


def enable_gradient_checkpointing(model: nn.Module, names: Iterable[str]) -> list[str]:
    """Turn on diffusers' gradient checkpointing in the named networks; returns their names."""
    nets, chosen = networks(model), checkpointed_networks(model, names)
    for name in chosen:
        net = nets[name]
        if not getattr(net, "_supports_gradient_checkpointing", False):
            raise ConfigError(f"the {name} network ({type(net).__name__}) does not support gradient checkpointing; "
                              "drop it from train.gradient_checkpointing")
        net.enable_gradient_checkpointing()
    return chosen


def use_fused_adamw(setting: str, params: Iterable[torch.Tensor]) -> bool:
    """``train.optim.fused``: ``auto`` is on when every parameter is on CUDA (where the fused kernel pays)."""
    setting = str(setting).lower()
    if setting in ("true", "false"):
        return setting == "true"
    params = list(params)
    return bool(params) and all(p.is_cuda for p in params)


def apply_switches(module: nn.Module, train_cfg: DictConfig) -> dict:
    """Apply ``train``'s model switches (checkpointing, channels-last, compile) to a LightningModule's
    ``model``; precision is the trainer's and the fused optimizer is chosen in ``configure_optimizers``.
    Returns what was applied (recorded in the run's model_info.json)."""
    model = module.model
    applied: dict = {"precision": str(train_cfg.precision)}
    applied["gradient_checkpointing"] = enable_gradient_checkpointing(model, train_cfg.gradient_checkpointing or [])
    if train_cfg.channels_last:
        to_channels_last(model)
    applied["channels_last"] = bool(train_cfg.channels_last)
    if train_cfg.compile:
        model.compile(mode=None if train_cfg.compile_mode == "default" else str(train_cfg.compile_mode),
                      backend=str(train_cfg.compile_backend))
    applied["compile"] = {"mode": str(train_cfg.compile_mode), "backend": str(train_cfg.compile_backend)} \
        if train_cfg.compile else False
    return applied


def to_channels_last(model: nn.Module) -> None:
    """Convolution weights in channels-last order, in place: 4-d (2-d convolutions) as ``channels_last``,
    5-d (the temporal layers' 3-d convolutions) as ``channels_last_3d``."""
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() in formats:
                p.data = p.data.contiguous(memory_format=formats[p.dim()])


def autocast(precision: str, device: torch.device | str):
    """The autocast context ``train.precision`` means on ``device`` (a no-op for ``32-true``): what the
    trainer's precision plugin does, for a bare training loop (benchmarks)."""
    dtype: Optional[torch.dtype] = AUTOCAST_DTYPES[str(precision)]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
