"""An experiment resolved once: :class:`Experiment`.

:mod:`vfusion.config` only knows the schema (types, missing keys); the checks beyond types live
with the registries that know the names: data, diffusion (noise, process, sampling), models and
evaluation. :func:`validate` runs them all and checks the trainer's own sections. An
:class:`Experiment` is a validated config with its base folder adopted, and the objects every
phase builds from it (process, prior, sampling settings), made here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
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


@dataclass(frozen=True, eq=False)
class Experiment:
    """A config checked and resolved against its base folder; what train, sample and evaluate share.

    Build it with :meth:`from_config`, :meth:`load` (a YAML file) or :meth:`of_run` (a run's saved
    copy, already resolved when it was trained); ``config`` is then read, never reloaded.
    """

    config: DictConfig

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "Experiment":
        return cls(adopted_config(merge_config(cfg)))

    @classmethod
    def load(cls, path: str | Path, overrides: Optional[list[str]] = None) -> "Experiment":
        """The experiment of a YAML file, checked once, after its base is adopted (errors name the file)."""
        cfg = load_config(path, overrides)
        try:
            return cls.from_config(cfg)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from err

    @classmethod
    def of_run(cls, run_dir: str | Path, overrides: Optional[list[str]] = None) -> "Experiment":
        from vfusion.rundir import RunDir

        return cls(validate(RunDir(run_dir).config(overrides)))

    @property
    def name(self) -> str:
        return str(self.config.name)

    @property
    def run_dir(self) -> Path:
        from vfusion.config import run_dir_of

        return run_dir_of(self.config)

    @cached_property
    def process(self):
        """The run's DiffusionProcess / FlowProcess, from the resolved scheduler config."""
        from vfusion.backbones.adopt import experiment_process

        return experiment_process(self.config)

    @cached_property
    def prior(self):
        return noise_prior(self.config)

    def prior_for(self, num_frames: int):
        """The prior over ``num_frames`` frames (the model's clip; stage 1's image UNet sees one frame)."""
        if num_frames == int(self.config.data.num_frames):
            return self.prior
        from vfusion.diffusion.noise import noise_prior_from_config

        return noise_prior_from_config(self.config.noise, num_frames)

    def model_spec(self, in_channels: int, sample_size: int, num_frames: int, num_classes: int,
                   class_names=()):
        """The :class:`~vfusion.models.spec.ModelSpec` a model is built with: the data facts, this
        experiment's process and prior, and how the base generator calls its image model."""
        from vfusion.backbones.adopt import base_facts
        from vfusion.models.spec import ModelSpec

        return ModelSpec(in_channels, sample_size, num_frames, num_classes, process=self.process,
                         noise=self.prior_for(num_frames), base=base_facts(self.config, num_classes, class_names))

    def sample_settings(self, for_eval: bool = False, **choices):
        """Sampling settings: the caller's ``choices`` where not None, else ``sample.*`` (``eval.*`` for
        the count, seed and batch size when ``for_eval``)."""
        from vfusion.rundir import settings_from_config

        return settings_from_config(self.config, for_eval=for_eval, **choices)


def as_experiment(experiment) -> Experiment:
    """``experiment`` itself, or a config resolved into one (scripts and tests pass configs)."""
    return experiment if isinstance(experiment, Experiment) else Experiment.from_config(experiment)
