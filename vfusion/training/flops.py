"""Training FLOPs of one optimizer step, counted by PyTorch: the compute budget of a study.

``torch.utils.flop_counter.FlopCounterMode`` sees every operator that a forward + backward pass dispatches and adds
up the FLOPs of the matrix products, convolutions and attention (2 FLOPs per multiply-add); elementwise work (norms,
activations, the loss, the optimizer update, EMA) is not counted, as in the usual 6·N·D accounting. It counts what
autograd actually runs: a linear layer costs 2·B·in·out forward and 4·B·in·out backward (the gradients of its input
and of its weight), except where its input needs no gradient (the first layer, which sees the data).

A step's FLOPs depend on shapes only, not on values (no data-dependent control flow), so one step on a batch of the
run's shape, counted once per run, fixes the step count of a FLOPs budget (:mod:`vfusion.studies.spec`). A step is
the denoiser's loss, forward and backward: turning a pixel batch into VAE latents (frozen, no gradient) is data
preparation, as with ``data.cache: latents``, and is not counted.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from omegaconf import DictConfig, ListConfig
from torch import nn
from torch.utils.flop_counter import (FlopCounterMode, flop_registry, register_flop_formula, sdpa_flop_count)

from vfusion.config import ConfigError

# PyTorch has no formula for the CPU's fused attention kernel, so a CPU count would treat attention as
# free, while the meta device runs attention as plain batched products and counts them: these formulas
# count the CPU kernel as those products, so both devices count the same step.
def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_attention_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                                  **kwargs) -> int:
    """The gradients of the two products (scores and output) w.r.t. both operands each: four products
    of the forward's size, as the unfused attention's backward runs them (PyTorch's CUDA formula also
    counts the flash kernel's recomputed scores, a fifth)."""
    return 2 * sdpa_flop_count(query_shape, key_shape, value_shape)


for _op, _formula in ((torch.ops.aten._scaled_dot_product_flash_attention_for_cpu, _cpu_attention_flops),
                      (torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward,
                       _cpu_attention_backward_flops)):
    if _op not in flop_registry:
        register_flop_formula(_op)(_formula)


def _loss(module: nn.Module, batch) -> torch.Tensor:
    if hasattr(module, "diffusion_loss"):  # the VideoDiffusionModule: its training loss
        return module.diffusion_loss(*batch)["total"]
    return module(batch).square().mean()


def train_step_flops(module: nn.Module, batch, loss: Optional[Callable[[nn.Module, object], torch.Tensor]] = None
                     ) -> int:
    """FLOPs of forward + backward of one training step of ``module`` on ``batch``.

    ``module``: a :class:`~vfusion.training.lit_module.VideoDiffusionModule` (``batch`` is a loader
    batch ``(x, y)``; the step is its diffusion loss) or any module, whose step is
    ``loss(module, batch)`` (default: the mean square of ``module(batch)``). The module is left as
    it was: its gradients, train/eval mode and the random number generators are restored.
    """
    loss = loss or _loss
    params = list(module.parameters())
    grads = [p.grad for p in params]
    was_training = module.training
    if hasattr(module, "prepare_batch"):
        with torch.no_grad():
            batch = module.prepare_batch(batch)
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    cuda = [first.device.index or 0] if first.is_cuda else []
    counter = FlopCounterMode(display=False)
    try:
        for p in params:
            p.grad = None
        module.train()
        with torch.random.fork_rng(devices=cuda), counter:
            loss(module, batch).backward()
    finally:
        for p, g in zip(params, grads):
            p.grad = g
        module.train(was_training)
    return int(counter.get_total_flops())


def device_count(train_cfg: DictConfig) -> int:
    """How many processes train together (each on its own batch of ``data.batch_size``)."""
    devices = train_cfg.devices
    if isinstance(devices, (list, tuple, ListConfig)):
        n = len(devices)
    elif isinstance(devices, int) or str(devices).isdigit():
        n = int(devices)
    elif str(train_cfg.accelerator) == "cpu":
        n = 1  # Lightning's "auto" / -1 on the CPU accelerator: one process
    else:
        raise ConfigError(f"config key 'train.devices' is {devices!r}: a FLOPs budget counts every device's work, "
                          "so give the number of devices (or a list of them)")
    return n * int(train_cfg.num_nodes)


def _meta_module(cfg: DictConfig, spec_info: Optional[dict]):
    """The run's module on the meta device: shapes without values, so a step is counted in about a second
    whatever the model's size (``spec_info``: the data facts, else :func:`shape_facts` of the config)."""
    from vfusion.experiment import adopted_config
    from vfusion.training.runner import build_module, shape_facts

    cfg = adopted_config(cfg)
    spec_info = spec_info if spec_info is not None else shape_facts(cfg)
    with torch.random.fork_rng(devices=[]):  # building draws initial weights: leave the caller's RNG alone
        module = build_module(cfg, spec_info, codec=None)  # the batches below are in the shape the model sees
    return cfg, spec_info, module.to("meta")


def _zeros_batch(spec_info: dict, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.zeros(b, int(spec_info["in_channels"]), int(spec_info["num_frames"]), int(spec_info["sample_size"]),
                    int(spec_info["sample_size"]), device="meta")
    return x, torch.zeros(b, dtype=torch.long, device="meta")


def denoise_flops(cfg: DictConfig, spec_info: Optional[dict] = None, batch_size: int = 1) -> int:
    """FLOPs of one forward pass of the run's denoiser on ``batch_size`` clips: the cost of one sampling
    step per clip (twice that with classifier-free guidance, which runs the model without the label too)."""
    cfg, spec_info, module = _meta_module(cfg, spec_info)
    x, y = _zeros_batch(spec_info, batch_size)
    t = module.process.sample_timesteps(batch_size, device=x.device)  # shapes only
    cond = module.conditioner(y if module.conditional else None, batch_size)
    counter = FlopCounterMode(display=False)
    module.eval()
    with torch.no_grad(), counter:
        module.model(x, t, cond)
    return int(counter.get_total_flops())


def run_step_flops(cfg: DictConfig, spec_info: Optional[dict] = None) -> int:
    """FLOPs of one training step (all devices) of the stage-2 run that ``cfg`` describes.

    Builds the run's module as :func:`vfusion.training.runner.fit` does (its base folder adopted;
    ``spec_info``: the data facts, else taken from the config alone, without the dataset) and counts
    one step on the meta device, on a batch of the shape the loader gives it: ``data.batch_size``
    clips, in latent shape when the run works on VAE latents.
    """
    cfg, spec_info, module = _meta_module(cfg, spec_info)
    return train_step_flops(module, _zeros_batch(spec_info, int(cfg.data.batch_size))) * device_count(cfg.train)
