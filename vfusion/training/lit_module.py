"""The one LightningModule: any denoiser, decomposed (or independent) noise, ε-MSE.

Training step (method.md, "Training"):
    ε, b, r = DecomposedNoise(λ).sample(x.shape)       λ ≡ 0: independent noise
    z_t     = scheduler.add_noise(x, ε, t)
    ε̂       = model(z_t, t, label with CFG dropout)
    L       = mean_i ||ε^i − ε̂^i||²,   logged as train/loss, train/loss_base, train/loss_residual

Stage 1 (``stage="pretrain"``) trains the base UNet alone on single frames, through
the same code with one-frame clips. The EMA of the weights (diffusers' ``EMAModel``)
is saved in every checkpoint and used for sampling.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import lightning as L
import torch
from diffusers.training_utils import EMAModel
from omegaconf import DictConfig, OmegaConf

from vfusion.errors import UserError
from vfusion.diffusion.noise import DecomposedNoise, lambdas_from_config
from vfusion.diffusion.process import loss_terms, train_scheduler
from vfusion.layout import fold_frames, keyframe_index
from vfusion.models.registry import build_model
from vfusion.models.spec import ModelSpec


class CheckpointMismatchError(UserError, RuntimeError):
    """A checkpoint written by a different model/data configuration."""


def model_signature(cfg: DictConfig, stage: str, spec_info: dict) -> dict:
    """What must match for a checkpoint to fit this model."""
    return {"stage": stage, "model": OmegaConf.to_container(cfg.model, resolve=True), "spec": spec_info}


def _strip_non_architecture(sig: dict) -> dict:
    model = dict(sig["model"])
    for key in ("class_dropout",):
        model.pop(key, None)
    base = dict(model.get("base", {}))
    for key in ("pretrained", "subfolder", "lr_mult", "freeze"):
        base.pop(key, None)
    model["base"] = base
    return {"stage": sig["stage"], "model": model, "spec": sig["spec"]}


class VideoDiffusionModule(L.LightningModule):
    def __init__(self, cfg: dict, spec_info: dict, stage: str = "video"):
        """``cfg``: the resolved experiment config (a plain dict, saved in checkpoints);
        ``spec_info``: in_channels, sample_size, num_frames, num_classes (from the data)."""
        super().__init__()
        self.save_hyperparameters()
        self.cfg = OmegaConf.create(cfg)
        self.stage = stage
        self.spec_info = dict(spec_info)
        self.scheduler = train_scheduler(self.cfg.diffusion)
        frames = 1 if stage == "pretrain" else spec_info["num_frames"]
        lambdas = torch.ones(1, dtype=torch.float64) if stage == "pretrain" else lambdas_from_config(self.cfg.noise, frames)
        self.noise = DecomposedNoise(lambdas)
        self.spec = ModelSpec(in_channels=spec_info["in_channels"], sample_size=spec_info["sample_size"],
                              num_frames=frames, num_classes=spec_info["num_classes"], lambdas=lambdas,
                              alphas_cumprod=self.scheduler.alphas_cumprod)
        if stage == "pretrain":
            from vfusion.models.image_unet import build_image_unet

            self.model = build_image_unet(self.cfg, self.spec)
        else:
            self.model = build_model(self.cfg, self.spec)
        if self.cfg.model.base.freeze and hasattr(self.model, "base_parameters") and stage != "pretrain":
            for p in self.model.base_parameters():
                p.requires_grad_(False)
        self.ema: Optional[EMAModel] = EMAModel(self.model.parameters(), decay=self.cfg.train.ema_decay) \
            if self.cfg.train.ema_decay > 0 else None
        self.keyframe = keyframe_index(frames)
        self._step_times: list[float] = []
        self._codec = None

    # ---- data -------------------------------------------------------------------------------
    def set_codec(self, codec) -> None:
        """A ``LatentCodec``: pixel batches are encoded to latents on the fly.

        Kept out of the module tree on purpose: the frozen VAE is not part of the
        model's checkpoint, its EMA or its parameter count."""
        object.__setattr__(self, "_codec", codec)

    def _prepare(self, batch) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        x, y = batch[0], batch[1]
        if self._codec is not None and self.cfg.data.cache != "latents":  # pixel clips: encode now
            with torch.no_grad():
                x = self._codec.to(x.device).encode(x)
        if self.stage == "pretrain":
            # single frames of the training clips, shuffled, pretrain.batch_size of them
            n = x.shape[2]
            frames = fold_frames(x).unsqueeze(2)                      # (B*T, C, 1, H, W)
            y = y.repeat_interleave(n) if y is not None else None
            perm = torch.randperm(frames.shape[0], device=frames.device)[: self.cfg.pretrain.batch_size]
            x, y = frames[perm], (y[perm] if y is not None else None)
        if self.spec.num_classes == 0:
            y = None
        return x, y

    def _drop_labels(self, y: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        p = self.cfg.model.class_dropout
        if y is None or p <= 0:
            return y
        drop = torch.rand(y.shape, device=y.device) < p
        return torch.where(drop, torch.full_like(y, self.spec.num_classes), y)

    # ---- training -----------------------------------------------------------------------------
    def diffusion_loss(self, x: torch.Tensor, y: Optional[torch.Tensor]) -> dict[str, torch.Tensor]:
        b = x.shape[0]
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), device=x.device)
        eps = self.noise.sample(x.shape, device=x.device, dtype=x.dtype).eps
        x_t = self.scheduler.add_noise(x, eps, t)
        eps_hat = self.model(x_t, t, self._drop_labels(y))
        return loss_terms(eps_hat, eps, self.keyframe)

    def training_step(self, batch, batch_idx):
        x, y = self._prepare(batch)
        terms = self.diffusion_loss(x, y)
        self.log("train/loss", terms["total"], prog_bar=True, batch_size=x.shape[0])
        self.log("train/loss_base", terms["base"], batch_size=x.shape[0])
        if "residual" in terms:
            self.log("train/loss_residual", terms["residual"], batch_size=x.shape[0])
        return terms["total"]

    def on_train_start(self) -> None:
        # distinct noise per rank and per resume point (the data order is seeded separately)
        torch.manual_seed(int(self.cfg.seed) * 1000003 + self.global_rank * 7919 + self.global_step)
        self.scheduler.alphas_cumprod = self.scheduler.alphas_cumprod.to(self.device)
        if self.ema is not None:
            self.ema.to(self.device)

    def on_train_batch_start(self, batch, batch_idx):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema is not None:
            self.ema.step(self.model.parameters())
        self._step_times.append(time.perf_counter() - self._t0)
        opt = self.optimizers()
        for i, group in enumerate(opt.param_groups):
            self.log(f"lr/{group.get('name', i)}", group["lr"], batch_size=1)

    def configure_optimizers(self):
        o = self.cfg.train.optim
        lr = self.cfg.pretrain.lr if self.stage == "pretrain" else o.lr
        groups = []
        if self.stage != "pretrain" and hasattr(self.model, "base_parameters"):
            base_ids = {id(p) for p in self.model.base_parameters()}
            base = [p for p in self.model.base_parameters() if p.requires_grad]
            rest = [p for p in self.model.parameters() if id(p) not in base_ids and p.requires_grad]
            groups.append({"params": rest, "lr": lr, "name": "residual"})
            if base and self.cfg.model.base.lr_mult > 0:
                groups.append({"params": base, "lr": lr * self.cfg.model.base.lr_mult, "name": "base"})
            elif base:
                for p in base:
                    p.requires_grad_(False)
        else:
            groups.append({"params": [p for p in self.model.parameters() if p.requires_grad], "lr": lr,
                           "name": "model"})
        opt = torch.optim.AdamW(groups, lr=lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        warmup = max(int(o.warmup_steps), 0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---- checkpoints --------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vfusion"] = {"signature": model_signature(self.cfg, self.stage, self.spec_info),
                                 "mean_step_time_s": self.mean_step_time()}
        if self.ema is not None:
            checkpoint["ema"] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_signature(checkpoint, model_signature(self.cfg, self.stage, self.spec_info))
        if self.ema is not None and "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])

    def mean_step_time(self) -> Optional[float]:
        times = self._step_times[5:] or self._step_times  # skip warm-up steps when possible
        return float(sum(times) / len(times)) if times else None

    def ema_model(self):
        """A context manager swapping the EMA weights in (no-op without EMA)."""
        return _EMASwap(self)


def check_signature(checkpoint: dict, expected: dict) -> None:
    got = checkpoint.get("vfusion", {}).get("signature")
    if got is None:
        raise CheckpointMismatchError("the checkpoint was not written by vfusion (no model signature); "
                                      "pass a checkpoint from a vfusion run directory")
    a, b = _strip_non_architecture(got), _strip_non_architecture(expected)
    if a != b:
        diffs = _diff(a, b)
        raise CheckpointMismatchError("the checkpoint belongs to another model/data configuration: "
                                      + "; ".join(diffs[:6]) + " — resume with the run's own config.yaml or "
                                      "start a new run (another run_dir)")


def _diff(a, b, prefix="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: checkpoint {a!r} vs config {b!r}"]


class _EMASwap:
    def __init__(self, module: VideoDiffusionModule):
        self.m = module

    def __enter__(self):
        if self.m.ema is not None:
            self.m.ema.store(self.m.model.parameters())
            self.m.ema.copy_to(self.m.model.parameters())
        return self.m.model

    def __exit__(self, *exc):
        if self.m.ema is not None:
            self.m.ema.restore(self.m.model.parameters())
        return False

