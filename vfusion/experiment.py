"""An experiment resolved once: its config checked by the package that owns each section.

:mod:`vfusion.config` only knows the schema (types, missing keys); the checks beyond types live
with the registries that know the names: data, diffusion (noise, process, sampling), models and
evaluation. This module is the one place that runs them all, and checks the trainer's own
sections (``train``, ``pretrain``) itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from vfusion.config import ConfigError, at_least, check_choice, load_config, merge_config
from vfusion.data.registry import check_data_section
from vfusion.diffusion.priors import check_noise_section
from vfusion.diffusion.samplers import check_diffusion_section
from vfusion.evaluation.protocols import check_eval_section
from vfusion.models.registry import check_model_section

# train.precision: the trainer's values that keep the weights, EMA and loss in fp32
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
LR_SCHEDULES = ("constant", "cosine")
LOSS_WEIGHTINGS = ("none", "min_snr")


def validate(cfg: DictConfig) -> DictConfig:
    """Every check beyond types, section by section; returns ``cfg`` unchanged."""
    check_data_section(cfg)
    check_diffusion_section(cfg)
    check_model_section(cfg)
    check_eval_section(cfg)
    check_training_sections(cfg)
    check_noise_section(cfg)
    noise_prior(cfg)  # the prior's own checks (λ schedules); imports torch, so last
    return cfg


def noise_prior(cfg: DictConfig):
    """The experiment's noise prior; its own refusals name the ``noise`` section."""
    from vfusion.diffusion.noise import noise_prior_from_config
    from vfusion.errors import UserError

    try:
        return noise_prior_from_config(cfg.noise, int(cfg.data.num_frames))
    except UserError as err:
        raise ConfigError(f"config section 'noise' (prior '{cfg.noise.prior}'): {err}") from err


def resolve_config(*sources: Any, overrides: Optional[list[str]] = None) -> DictConfig:
    """:func:`vfusion.config.merge_config`, then :func:`validate`."""
    return validate(merge_config(*sources, overrides=overrides))


def load_experiment_config(path: str | Path, overrides: Optional[list[str]] = None) -> DictConfig:
    """:func:`vfusion.config.load_config`, then :func:`validate` (errors name the file)."""
    cfg = load_config(path, overrides)
    try:
        return validate(cfg)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def check_training_sections(cfg: DictConfig) -> None:
    """``train`` and ``pretrain``: the trainer's choices, budgets and rates."""
    t = cfg.train
    check_choice(t.optim.schedule, LR_SCHEDULES, "train.optim.schedule")
    check_choice(t.loss_weighting, LOSS_WEIGHTINGS, "train.loss_weighting")
    if t.loss_weighting == "min_snr" and cfg.diffusion.kind == "flow":
        raise ConfigError("config key 'train.loss_weighting' is 'min_snr', which is defined for diffusion.kind=ddpm; "
                          "use train.loss_weighting=none with rectified flow")
    check_choice(str(t.precision), PRECISIONS, "train.precision")
    check_choice(str(t.optim.fused).lower(), ("auto", "true", "false"), "train.optim.fused")
    check_choice(str(t.compile_mode), COMPILE_MODES, "train.compile_mode")
    if str(t.strategy).startswith("fsdp") and t.ema_decay > 0:
        raise ConfigError("config key 'train.strategy' is fsdp, which shards the weights across GPUs, but the EMA "
                          "(train.ema_decay) keeps a full copy of them on every GPU; set train.ema_decay=0 with fsdp")
    if t.keep_checkpoints < 1:
        raise ConfigError(f"config key 'train.keep_checkpoints' is {t.keep_checkpoints}; keep at least 1 step "
                          "checkpoint (last.ckpt is kept besides them)")
    at_least(cfg, ("pretrain.batch_size", "train.log_every_n_steps", "train.checkpoint_every_n_steps"), 1)
    at_least(cfg, ("train.optim.lr", "pretrain.lr"), 0.0, strict=True)
    at_least(cfg, ("train.max_minutes", "pretrain.max_minutes", "train.optim.weight_decay", "train.optim.grad_clip",
                   "train.optim.warmup_steps", "train.sample_every_n_steps", "train.ema_decay"), 0.0)
    per_clip = cfg.pretrain.frames_per_clip
    if per_clip is not None and per_clip < 1:
        raise ConfigError(f"config key 'pretrain.frames_per_clip' is {per_clip}; expected >= 1 (at most "
                          f"data.num_frames are taken), or null for whole clips")
    if t.ema_decay >= 1.0:
        raise ConfigError(f"config key 'train.ema_decay' is {t.ema_decay}; expected a value in [0, 1)")
    for stage in ("train", "pretrain"):
        steps, minutes = cfg[stage].max_steps, cfg[stage].max_minutes
        if steps == -1 and minutes > 0:  # a minutes-only budget
            continue
        if steps < 1:
            raise ConfigError(f"config key '{stage}.max_steps' is {steps}; expected >= 1 (or -1 together with "
                              f"{stage}.max_minutes > 0 for a time budget alone)")


def adopted_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` with its base folder's noise process and VAE filled in, checked again."""
    from vfusion.backbones.adopt import adopt_backbone

    return validate(adopt_backbone(cfg))
