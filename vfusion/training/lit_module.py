"""The one LightningModule: it receives a denoiser, a DiffusionProcess and a noise prior.

Training step (method.md, "Training"), L logged as train/loss, train/loss_base (keyframe), train/loss_residual:
    ε, b, r = prior.sample(x.shape, level=u(t))         independent prior: plain randn
    z_t     = process.add_noise(x, ε, t)
    pred    = model(z_t, t, cond with condition dropout)
    L       = mean_i || process.target(x, ε, t)^i − pred^i ||²

Every model is handled alike (stage 1 is the registered ``image_unet`` on one-frame clips, whose
``batch_transform`` turns clips into single frames). The EMA of the weights (diffusers' ``EMAModel``) is saved in
every checkpoint and used for sampling. Checkpoints hold tensors and plain containers only, so
``torch.load(..., weights_only=True)`` reads them.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import lightning as L
import torch
from diffusers.training_utils import EMAModel

from vfusion.conditioning import Conditioner
from vfusion.diffusion.process import loss_terms
from vfusion.errors import UserError
from vfusion.layout import fold_frames, keyframe_index
from vfusion.training.switches import use_fused_adamw


class CheckpointMismatchError(UserError, RuntimeError):
    """A checkpoint written by a different model/data configuration."""


class RandomFrames:
    """Stage 1's batches: ``count`` single frames drawn from the frames of a batch of clips."""

    def __init__(self, count: int):
        self.count = int(count)

    def __call__(self, x: torch.Tensor, y: Optional[torch.Tensor], captions: Optional[list[str]] = None):
        n = x.shape[2]
        frames = fold_frames(x).unsqueeze(2)                      # (B*T, C, 1, H, W)
        y = y.repeat_interleave(n) if y is not None else None
        perm = torch.randperm(frames.shape[0], device=frames.device)[: self.count]
        picked = [captions[int(i) // n] for i in perm] if captions is not None else None   # each frame's clip's
        return frames[perm], (y[perm] if y is not None else None), picked


class VideoDiffusionModule(L.LightningModule):
    def __init__(self, model: torch.nn.Module, process, noise, *, optim: dict, ema_decay: float = 0.0,
                 class_dropout: float = 0.0, base_lr_mult: float = 1.0, freeze_base: bool = False,
                 conditional: bool = True, seed: int = 0, signature: Optional[dict] = None,
                 batch_transform: Optional[Callable] = None, codec=None, encode_batches: bool = False,
                 conditioner: Optional[Conditioner] = None, prompt_encoder=None,
                 loss_weighting: str = "none", min_snr_gamma: float = 5.0, max_steps: int = 0):
        """``optim``: lr, betas, weight_decay, warmup_steps; ``signature``: what a checkpoint must match
        to be resumed into this module (see :func:`check_signature`); ``conditioner`` turns batch labels
        into the models' Cond (with a text base: the prompt states of each class); ``prompt_encoder``
        (frozen, kept out of the module tree like the VAE) encodes captioned batches' captions and goes
        into the exported pipeline; ``class_dropout`` is the caption dropout on captioned data."""
        super().__init__()
        self.model = model
        self.process = process
        self.noise = noise
        self.optim = dict(optim)
        self.class_dropout = float(class_dropout)
        self.base_lr_mult = float(base_lr_mult)
        self.conditional = bool(conditional)
        self.seed = int(seed)
        self.signature = signature or {}
        self.batch_transform = batch_transform
        self.encode_batches = bool(encode_batches)  # pixel batches are encoded to VAE latents on the fly
        self.video_config: dict = {}  # what a pipeline of this model records (set by the runner)
        self.conditioner = conditioner if conditioner is not None else Conditioner(1 if conditional else 0)
        if freeze_base and hasattr(model, "base_parameters"):
            for p in model.base_parameters():  # a pretrained DiT's fresh class tables still learn
                p.requires_grad_(bool(getattr(p, "keep_trainable", False)))
        model.train()  # from_pretrained leaves a loaded base network in eval mode
        self.ema: Optional[EMAModel] = EMAModel(self.model.parameters(), decay=ema_decay) if ema_decay > 0 else None
        self.loss_weighting, self.min_snr_gamma = str(loss_weighting), float(min_snr_gamma)
        self.max_steps = int(max_steps)  # the cosine learning-rate schedule ends here
        self.keyframe = keyframe_index(noise.num_frames)
        self._step_times: list[float] = []
        self.switches: dict = {}  # the speed switches a training run applied (vfusion.training.switches)
        # Kept out of the module tree on purpose: the frozen VAE is not part of the model's
        # checkpoint, its EMA or its parameter count.
        object.__setattr__(self, "codec", codec)
        object.__setattr__(self, "prompt_encoder", prompt_encoder)

    # ---- data -------------------------------------------------------------------------------
    def prepare_batch(self, batch) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[list[str]]]:
        """A loader batch ``(x, y)`` or ``(x, y, captions)`` as the diffusion loss takes it: encoded to latents
        (a frozen VAE, no gradient) and/or cut into single frames (stage 1) when the module does that."""
        x, y = batch[0], batch[1]
        captions = list(batch[2]) if len(batch) > 2 else None
        if self.encode_batches:
            with torch.no_grad():
                x = self.codec.to(x.device).encode(x)
        if self.batch_transform is not None:
            x, y, captions = self.batch_transform(x, y, captions)
        return x, y, captions

    def encode_captions(self, captions: Optional[list[str]]):
        """The frozen text encoder's ``(states, mask)`` of a batch's captions (cached per caption), or None
        when the batch has none or the model is not text-conditioned."""
        if captions is None or not self.conditioner.has_text or self.prompt_encoder is None:
            return None
        return self.prompt_encoder.to(self.conditioner.text_table.device).encode(captions)

    # ---- training -----------------------------------------------------------------------------
    def diffusion_loss(self, x: torch.Tensor, y: Optional[torch.Tensor],
                       captions: Optional[list[str]] = None) -> dict[str, torch.Tensor]:
        t = self.process.sample_timesteps(x.shape[0], device=x.device)
        eps = self.noise.sample(x.shape, device=x.device, dtype=x.dtype, level=self.process.noise_level(t)).eps
        x_t = self.process.add_noise(x, eps, t)
        cond = self.conditioner(y if self.conditional else None, x.shape[0], self.encode_captions(captions))
        pred = self.model(x_t, t, cond.drop(self.class_dropout) if cond is not None else None)
        weights = self.process.loss_weights(t, self.loss_weighting, self.min_snr_gamma) \
            if self.loss_weighting != "none" else None
        return loss_terms(pred, self.process.target(x, eps, t), self.keyframe, weights)

    def training_step(self, batch, batch_idx):
        x, y, captions = self.prepare_batch(batch)
        terms = self.diffusion_loss(x, y, captions)
        self.log("train/loss", terms["total"], prog_bar=True, batch_size=x.shape[0])
        self.log("train/loss_base", terms["base"], batch_size=x.shape[0])
        if "residual" in terms:
            self.log("train/loss_residual", terms["residual"], batch_size=x.shape[0])
        return terms["total"]

    def on_train_start(self) -> None:
        # distinct noise per rank and per resume point (the data order is seeded separately)
        torch.manual_seed(self.seed * 1000003 + self.global_rank * 7919 + self.global_step)
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
        o = self.optim
        lr = float(o["lr"])
        groups = []
        if hasattr(self.model, "base_parameters"):
            base_ids = {id(p) for p in self.model.base_parameters()}
            base = [p for p in self.model.base_parameters() if p.requires_grad]
            rest = [p for p in self.model.parameters() if id(p) not in base_ids and p.requires_grad]
            groups.append({"params": rest, "lr": lr, "name": "residual"})
            if base and self.base_lr_mult > 0:
                groups.append({"params": base, "lr": lr * self.base_lr_mult, "name": "base"})
            elif base:
                for p in base:
                    p.requires_grad_(False)
        else:
            groups.append({"params": [p for p in self.model.parameters() if p.requires_grad], "lr": lr,
                           "name": "model"})
        fused = use_fused_adamw(o.get("fused", "auto"), [p for g in groups for p in g["params"]])
        opt = torch.optim.AdamW(groups, lr=lr, betas=tuple(o["betas"]), weight_decay=float(o["weight_decay"]),
                                fused=fused or None)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(max(int(o["warmup_steps"]), 0),
                                                                o.get("schedule", "constant"), self.max_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---- checkpoints --------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vfusion"] = {"signature": self.signature, "mean_step_time_s": self.mean_step_time()}
        if self.ema is not None:
            checkpoint["ema"] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_signature(checkpoint, self.signature)
        if self.ema is not None and "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])

    def mean_step_time(self) -> Optional[float]:
        times = self._step_times[5:] or self._step_times  # skip warm-up steps when possible
        return float(sum(times) / len(times)) if times else None

    def ema_model(self):
        """A context manager swapping the EMA weights in (no-op without EMA)."""
        return _EMASwap(self)

    def pipeline(self):
        """An in-memory VideoFusionPipeline over this module's model (its current weights: wrap in
        :meth:`ema_model` for the EMA ones)."""
        from vfusion.inference.pipeline import VideoFusionPipeline

        vae = self.codec.vae if self.codec is not None else None
        return VideoFusionPipeline.from_model(self.model, self.process, self.video_config, vae=vae,
                                              prompt_encoder=self.prompt_encoder)


def lr_factor(warmup: int, schedule: str, max_steps: int) -> Callable[[int], float]:
    """The learning-rate multiplier at step s: linear warm-up, then constant or a cosine to 0 at ``max_steps``."""
    import math

    def factor(s: int) -> float:
        if warmup and s < warmup:
            return (s + 1) / warmup
        if schedule == "cosine" and max_steps > warmup:
            done = min(1.0, (s - warmup) / (max_steps - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * done))
        return 1.0

    return factor


def model_signature(model_cfg: dict, spec_info: dict) -> dict:
    """What must match for a checkpoint to fit a model: its config section and the data facts."""
    return {"model": dict(model_cfg), "spec": dict(spec_info)}


# architecture keys of model.base / model.residual that checkpoints written before them lack (null: as before)
LATER_KEYS = ("attention_resolutions", "temporal_resolutions")


def _strip_non_architecture(sig: dict) -> dict:
    model = dict(sig.get("model", {}))
    for key in ("class_dropout",):
        model.pop(key, None)
    base = dict(model.get("base", {}))
    for key in ("pretrained", "subfolder", "lr_mult", "freeze"):
        base.pop(key, None)
    model["base"] = base
    if isinstance(model.get("text"), dict):   # how prompts are cached is no part of the model
        model["text"] = {k: v for k, v in model["text"].items() if k != "cache_size"}
    for section in ("base", "residual"):   # keys added later, at their defaults: older checkpoints fit
        part = model.get(section)
        if isinstance(part, dict):
            model[section] = {k: v for k, v in part.items() if not (k in LATER_KEYS and v is None)}
    return {"model": model, "spec": sig.get("spec")}


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
