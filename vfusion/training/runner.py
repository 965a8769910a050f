"""The one training entry point (stage 1 and stage 2) and the pipeline export.

``fit`` builds everything it needs (data facts, DiffusionProcess, noise prior, model,
LightningModule) and checks a checkpoint it is asked to resume from BEFORE it writes
anything into the run directory (:class:`vfusion.rundir.RunDir`), then trains holding the run
directory's lock (:mod:`vfusion.runlock`: one trainer per run directory). When training ends it
writes the trained pipeline (EMA weights) to ``RUN/pipeline/``; stage 1 also writes the
image UNet alone in diffusers format (``RUN/base_unet/``); a stage-2 run from such a base keeps a
copy of it, and ``config.yaml`` records paths the way :mod:`vfusion.runpaths` reads them back
after the run directory is moved. Lightning checkpoints hold tensors and plain containers only
and are read with ``weights_only=True``.
"""

from __future__ import annotations

import logging
import math
import pickle
import shutil
import time
import zipfile
from pathlib import Path
from typing import Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from vfusion.config import ConfigError, run_dir_of, to_dict
from vfusion.errors import UserError
from vfusion.models.unet2d import count_parameters
from vfusion.rundir import TB_DIR, RunDir, save_config
from vfusion.runpaths import keep_base, recorded_config
from vfusion.training.checkpoint_io import AtomicCheckpointIO, remove_stale_temps
from vfusion.training.lit_module import RandomFrames, VideoDiffusionModule, check_signature, model_signature
from vfusion.training.switches import apply_switches
from vfusion.utils.io import atomic_write_json, environment_info, replace_dir

log = logging.getLogger(__name__)


class RunExistsError(ConfigError):
    pass


class CheckpointReadError(UserError):
    """A checkpoint file that cannot be read safely."""


def last_checkpoint(run_dir: Path) -> Optional[Path]:
    return RunDir(run_dir).last_checkpoint


def resume_config(run_dir: str | Path, overrides: Optional[list[str]] = None) -> DictConfig:
    """The saved config of an existing run, with optional overrides (e.g. more steps)."""
    from vfusion.experiment import validate

    cfg = RunDir(run_dir).config(overrides)
    cfg.run_dir = str(run_dir)
    return validate(cfg)


def load_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint read with ``weights_only=True`` (no code runs), or one clear error."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, AttributeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointReadError(f"cannot read the checkpoint {path}: {first[:300]} — it is truncated, not a vfusion "
                                  "checkpoint, or holds objects other than tensors (refused for safety)") from err


def stage1_config(cfg: DictConfig) -> DictConfig:
    """Stage 1 as an ordinary run of the registered ``image_unet``: its budget, lr and batch come from
    ``pretrain.*`` (clips of ``data.num_frames`` are loaded, ``pretrain.batch_size`` frames drawn)."""
    c = OmegaConf.create(to_dict(cfg))
    c.model.name = "image_unet"
    c.train.max_steps, c.train.max_minutes = cfg.pretrain.max_steps, cfg.pretrain.max_minutes
    c.train.optim.lr = cfg.pretrain.lr
    c.train.sample_every_n_steps = 0
    per_clip = cfg.pretrain.get("frames_per_clip")
    if per_clip is not None:   # shorter clips: stage 1 sees single frames anyway
        c.data.num_frames = min(int(per_clip), int(cfg.data.num_frames))
    c.data.batch_size = max(1, math.ceil(cfg.pretrain.batch_size / int(c.data.num_frames)))
    # the image UNet's one network is stage 2's base
    c.train.gradient_checkpointing = [n for n in cfg.train.gradient_checkpointing if n in ("all", "base")]
    from vfusion.experiment import resolve_config

    return resolve_config(c)


def stage1_batch_hint(cfg: DictConfig) -> str:
    """Stage 1's batch of clips comes from ``pretrain.*``, not ``data.batch_size``: say which keys."""
    per_clip = cfg.pretrain.get("frames_per_clip")
    frames = min(int(per_clip), int(cfg.data.num_frames)) if per_clip is not None else int(cfg.data.num_frames)
    return (f"stage 1 loads pretrain.batch_size / {'pretrain.frames_per_clip' if per_clip is not None else 'data.num_frames'}"
            f" = {cfg.pretrain.batch_size} / {frames} clips a step: lower pretrain.batch_size")


def spec_info_for(cfg: DictConfig) -> tuple[dict, object]:
    """Model-facing facts of the data: channels, size, frames, classes; plus the VAE codec if any."""
    from vfusion.data import dataset_info

    info = dataset_info(cfg.data)
    codec = make_codec(cfg)
    geometry = (codec.latent_channels, codec.downsample) if codec is not None else (3, 1)
    return _facts(cfg, geometry, list(info.get("class_names", []))), codec


# Class-conditional shapes do not depend on the number of classes (a class is a table look-up), so a
# count from the config alone may stand in any value; two keeps the conditional code paths in use.
PLACEHOLDER_CLASSES = ("class 0", "class 1")


def shape_facts(cfg: DictConfig) -> dict:
    """The facts of :func:`spec_info_for` from the config alone, for counting FLOPs without the data:
    no dataset is listed and no VAE weights are loaded (a latent run reads its VAE's ``config.json``);
    the class names are placeholders."""
    from vfusion.data.latents import latent_geometry

    geometry = latent_geometry(cfg.data.vae_path) if cfg.data.vae_path else (3, 1)
    return _facts(cfg, geometry, list(PLACEHOLDER_CLASSES))


def _facts(cfg: DictConfig, geometry: tuple[int, int], class_names: list[str]) -> dict:
    (channels, downsample), size = geometry, int(cfg.data.resolution)
    if size % downsample:
        raise ConfigError(f"data.resolution {size} is not divisible by {downsample}, the VAE's down-sampling "
                          f"({cfg.data.vae_path}); use a multiple of {downsample}")
    if cfg.data.vae_path:
        from vfusion.models.shapes import check_sample_size

        check_sample_size(cfg, size // downsample)
    from vfusion.data.registry import has_captions

    conditional = bool(cfg.data.class_conditional) and not has_captions(cfg.data.dataset)  # captions, not classes
    return {"in_channels": channels, "sample_size": size // downsample, "num_frames": int(cfg.data.num_frames),
            "num_classes": len(class_names) if conditional else 0, "class_names": class_names}


def make_codec(cfg: DictConfig):
    """The VAE ``LatentCodec`` when the experiment works on latents (``data.vae_path``), else None."""
    if not cfg.data.vae_path:
        return None
    from vfusion.data.latents import LatentCodec

    return LatentCodec(cfg.data.vae_path, cfg.data.vae_scaling_factor)


def build_module(experiment, spec_info: dict, codec=None) -> VideoDiffusionModule:
    """The experiment's process, prior and model for the data facts, handed to the LightningModule
    (``experiment``: an :class:`~vfusion.experiment.Experiment`, or a config resolved into one)."""
    from vfusion.experiment import as_experiment
    from vfusion.models.registry import build_model, model_class

    exp = as_experiment(experiment)
    cfg = exp.config
    data_frames = int(spec_info["num_frames"])
    frames = getattr(model_class(cfg.model.name), "clip_frames", None) or data_frames
    class_names = spec_info.get("class_names", [])
    spec = exp.model_spec(int(spec_info["in_channels"]), int(spec_info["sample_size"]), frames,
                          int(spec_info["num_classes"]), class_names)
    process, noise = spec.process, spec.noise
    model = build_model(cfg, spec)
    facts = spec.data_facts()
    conditioner, prompt_encoder = conditioner_for(cfg, spec)
    module = VideoDiffusionModule(
        model, process, noise, optim=to_dict(cfg.train.optim), ema_decay=float(cfg.train.ema_decay),
        class_dropout=float(cfg.data.caption_dropout if spec.base.get("captions") else cfg.model.class_dropout),
        base_lr_mult=float(cfg.model.base.lr_mult),
        freeze_base=bool(cfg.model.base.freeze), conditional=spec.num_classes > 0, seed=int(cfg.seed),
        signature=model_signature(to_dict(cfg.model), facts),
        batch_transform=RandomFrames(cfg.pretrain.batch_size) if frames < data_frames else None,
        codec=codec, encode_batches=codec is not None and cfg.data.cache != "latents",
        conditioner=conditioner, prompt_encoder=prompt_encoder,
        loss_weighting=cfg.train.loss_weighting, min_snr_gamma=float(cfg.train.min_snr_gamma),
        max_steps=int(cfg.train.max_steps))
    module.video_config = video_config_for(cfg, spec, class_names, codec)
    return module


def conditioner_for(cfg: DictConfig, spec):
    """The batch-label -> Cond conditioner and, for a text-conditioned base, its frozen prompt encoder
    (each class's prompt and the empty prompt encoded once, here)."""
    from vfusion.conditioning import Conditioner

    if not spec.base.get("text"):
        return Conditioner(spec.num_classes), None
    from vfusion.backbones.adopt import prompt_encoder

    encoder = prompt_encoder(cfg)
    prompts = list(spec.base["prompts"])
    states, mask = encoder.encode(prompts)
    null_states, null_mask = encoder.encode([""])
    if spec.base.get("captions"):
        log.info("text condition: each clip's caption, encoded once per caption (model.text.cache_size=%d)",
                 int(cfg.model.text.cache_size))
    else:
        log.info("text condition: %d prompt(s) encoded once, e.g. %r", len(prompts), prompts[0])
    return Conditioner(spec.num_classes, (states, mask, null_states, null_mask)), encoder


def video_config_for(cfg: DictConfig, spec, class_names, codec=None) -> dict:
    """What a pipeline needs besides its weights (``model_index.json``'s ``video_config``)."""
    s = cfg.sample
    return {"model": cfg.model.name, "in_channels": spec.in_channels, "sample_size": spec.sample_size,
            "num_frames": spec.num_frames, "num_classes": spec.num_classes, "class_names": list(class_names),
            "noise": to_dict(cfg.noise),
            "sample": {"sampler": s.sampler, "steps": int(s.steps), "guidance_scale": float(s.guidance_scale),
                       "batch_size": int(s.batch_size), "fps": int(s.fps),
                       "free_init_iters": int(s.free_init_iters), "free_init_order": int(s.free_init_order),
                       "free_init_ds": float(s.free_init_ds), "free_init_dt": float(s.free_init_dt)},
            "vae_scaling_factor": codec.scaling_factor if codec is not None else None,
            "base": dict(spec.base),
            "trained": {"experiment": cfg.name, "dataset": cfg.data.dataset, "resolution": int(cfg.data.resolution),
                        "seed": int(cfg.seed), "global_step": None}}  # set when the weights are exported


def build_trainer(cfg: DictConfig, run_dir: Path, max_steps: int, max_minutes: float, callbacks=()) -> L.Trainer:
    t = cfg.train
    # every step checkpoint is written; AtomicCheckpointIO keeps the last train.keep_checkpoints of them on disk
    ckpt_cb = ModelCheckpoint(dirpath=RunDir(run_dir).checkpoints, filename="step{step:07d}",
                              auto_insert_metric_name=False, every_n_train_steps=max(1, t.checkpoint_every_n_steps),
                              save_last=True, save_top_k=-1)
    cbs = [ckpt_cb, *callbacks]
    if t.progress_bar:
        cbs.append(TQDMProgressBar(refresh_rate=max(1, t.log_every_n_steps // 2)))
    return L.Trainer(
        default_root_dir=str(run_dir), max_steps=max_steps, max_epochs=-1,
        max_time={"minutes": max_minutes} if max_minutes and max_minutes > 0 else None,
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
        precision=t.precision, gradient_clip_val=t.optim.grad_clip or None, log_every_n_steps=t.log_every_n_steps,
        logger=TensorBoardLogger(str(run_dir), name=TB_DIR, version="", default_hp_metric=False),
        callbacks=cbs, plugins=[AtomicCheckpointIO(keep_step_checkpoints=int(t.keep_checkpoints))], enable_progress_bar=t.progress_bar,
        enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=True,
    )


def fit(experiment, stage: str = "video", resume: bool = False, train_loader=None,
        spec_info: Optional[dict] = None, extra_callbacks=()) -> Path:
    """Train stage 1 (``pretrain``: the image UNet on frames) or stage 2 (``video``) of an
    :class:`~vfusion.experiment.Experiment` (a config is resolved into one). Returns the run dir."""
    from vfusion.experiment import Experiment, as_experiment

    exp = as_experiment(experiment)  # the base folder's own process and VAE (resolved values go into config.yaml)
    cfg = exp.config
    run = RunDir(run_dir_of(cfg))
    saved_cfg = cfg
    train_exp = Experiment(stage1_config(cfg)) if stage == "pretrain" else exp
    train_cfg = train_exp.config
    ckpt = run.last_checkpoint
    if ckpt is not None and not resume:
        raise RunExistsError(f"run directory '{run.path}' already holds a checkpoint ({ckpt}); pass --resume to "
                             f"continue it, or choose a new directory with run_dir=... (or name=...)")
    state = load_checkpoint(ckpt) if ckpt is not None else None  # unreadable: refused before any work
    if spec_info is None:
        spec_info, codec = spec_info_for(train_cfg)
    else:
        codec = make_codec(train_cfg)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    module = build_module(train_exp, spec_info, codec)
    if state is not None:  # refuse a checkpoint of another model before anything is written
        check_signature(state, module.signature)
        del state
    elif resume:
        log.warning("--resume: no checkpoint in %s yet, starting from scratch", run.path)
    module.switches = apply_switches(module, train_cfg.train)  # an unknown network name is refused here
    if train_loader is None:
        from vfusion.data import build_dataloader

        train_loader = build_dataloader(train_cfg.data, split=train_cfg.data.split, train=True, seed=int(cfg.seed),
                                        batch_hint=stage1_batch_hint(cfg) if stage == "pretrain" else
                                        "lower data.batch_size")
    # the lock before the first write: a second process refuses here and leaves the directory as it was
    with run.lock() as lock:
        if lock.held:  # rank 0 (other DDP ranks start after it and take no lock)
            if run.last_checkpoint != ckpt:
                raise RunExistsError(f"another process wrote a checkpoint in '{run.path}' while this one was preparing; "
                                     "run again (with --resume to continue it)")
            remove_stale_temps(run.checkpoints)
            keep_base(saved_cfg, run.path)
        _train(run, cfg, saved_cfg, train_cfg, stage, module, spec_info, train_loader, ckpt, extra_callbacks)
    return run.path


def _train(run: RunDir, cfg: DictConfig, saved_cfg: DictConfig, train_cfg: DictConfig, stage: str,
           module: VideoDiffusionModule, spec_info: dict, train_loader, ckpt: Optional[Path], extra_callbacks) -> None:
    """The part of :func:`fit` that writes into the run directory (called holding its lock)."""
    run.path.mkdir(parents=True, exist_ok=True)
    save_config(recorded_config(saved_cfg, run.path), run.config_path)
    atomic_write_json(run.env_path, environment_info())
    atomic_write_json(run.run_info_path, {"stage": stage, "model": train_cfg.model.name, "spec": spec_info})
    module.process.save_pretrained(run.scheduler_dir)
    callbacks = []
    if train_cfg.train.sample_every_n_steps:
        from vfusion.training.callbacks import SampleLogger

        callbacks.append(SampleLogger(train_cfg.train.sample_every_n_steps))
    callbacks += list(extra_callbacks)
    trainer = build_trainer(train_cfg, run.path, int(train_cfg.train.max_steps), float(train_cfg.train.max_minutes),
                            callbacks)
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=train_loader, ckpt_path=str(ckpt) if ckpt else None, weights_only=True)
    trainer.save_checkpoint(run.last_checkpoint_path)
    max_steps, max_minutes = int(train_cfg.train.max_steps), float(train_cfg.train.max_minutes)
    early = None
    if max_steps > 0 and trainer.global_step < max_steps:
        key = "pretrain" if stage == "pretrain" else "train"
        early = {"steps": int(trainer.global_step), "of": max_steps,
                 "reason": f"{key}.max_minutes={max_minutes:g} reached" if max_minutes else "stopped"}
        log.warning("STOPPED EARLY at %d of %d steps (%s): this run's results are not comparable with a full "
                    "one; resume it with --resume and a larger %s.max_minutes", early["steps"], max_steps,
                    early["reason"], key)
    if trainer.is_global_zero:
        write_model_info(run.path, module, trainer, time.perf_counter() - start, stopped_early=early)
        module.video_config["trained"]["global_step"] = int(trainer.global_step)
        if str(train_cfg.train.strategy).startswith("fsdp"):  # sharded weights: one process cannot gather them
            log.warning("train.strategy=fsdp: the pipeline is not exported at the end of training; write it from the "
                        "consolidated checkpoint with `vfusion export --run %s`", run.path)
            return
        export_pipeline(module, run.pipeline_dir, use_ema=bool(cfg.sample.use_ema), metrics=run.read_metrics())
        if train_cfg.model.name == "image_unet":
            export_base_unet(module, run.path / cfg.pretrain.output_subdir)


def write_model_info(run_dir: Path, module: VideoDiffusionModule, trainer: L.Trainer, wall_s: float,
                     stopped_early: Optional[dict] = None) -> None:
    model = module.model
    parts = {"total": count_parameters(model)}
    for name in ("base", "residual"):
        if hasattr(model, name):
            parts[name] = count_parameters(getattr(model, name))
    atomic_write_json(RunDir(run_dir).model_info_path, {
        "model": module.video_config["model"], "parameters": parts, "global_step": trainer.global_step,
        "mean_train_step_s": module.mean_step_time(), "fit_wall_s_this_session": wall_s,
        "device": str(module.device), "stopped_early": stopped_early, "switches": module.switches,
    })


def export_base_unet(module: VideoDiffusionModule, out_dir: Path) -> Path:
    """Save the stage-1 UNet (EMA weights) with ``save_pretrained``, replacing ``out_dir`` atomically. A text
    base also gets its frozen encoder as ``text_encoder/`` and ``tokenizer/`` inside, so that the folder is a
    text base that stage 2 adopts like any other."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with module.ema_model() as model:
        model.unet.save_pretrained(str(tmp))
    if module.prompt_encoder is not None:
        module.prompt_encoder.text_encoder.save_pretrained(str(tmp / "text_encoder"))
        module.prompt_encoder.tokenizer.save_pretrained(str(tmp / "tokenizer"))
    replace_dir(tmp, out_dir)
    return out_dir


def export_pipeline(module: VideoDiffusionModule, out_dir: Path, use_ema: bool = True,
                    metrics: Optional[dict] = None) -> Path:
    """Write the trained pipeline (EMA weights unless ``use_ema`` is off) and its model card, atomically."""
    from vfusion.training.model_card import model_card

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    ctx = module.ema_model() if use_ema else _NoSwap(module.model)
    with ctx:
        module.pipeline().save_pretrained(str(tmp), safe_serialization=True)
    (tmp / "README.md").write_text(model_card(module.video_config, use_ema=use_ema and module.ema is not None,
                                              metrics=metrics))
    replace_dir(tmp, out_dir)
    return out_dir


class _NoSwap:
    def __init__(self, model):
        self.model = model

    def __enter__(self):
        return self.model

    def __exit__(self, *exc):
        return False


def module_from_checkpoint(run_dir: str | Path, checkpoint: Optional[str | Path] = None) -> VideoDiffusionModule:
    """The module of a run with the weights (and EMA) of one of its checkpoints (``weights_only=True``)."""
    run = RunDir(run_dir)
    ckpt = Path(checkpoint) if checkpoint else run.last_checkpoint
    if ckpt is None or not ckpt.is_file():
        raise ConfigError(f"no checkpoint {'at ' + str(checkpoint) if checkpoint else 'in ' + str(run.checkpoints)}; "
                          "train the run first (`vfusion train`)")
    from vfusion.experiment import Experiment

    exp = Experiment.of_run(run.path)
    info = run.run_info()
    train_exp = Experiment(stage1_config(exp.config)) if info.get("stage") == "pretrain" else exp
    state = load_checkpoint(ckpt)
    module = build_module(train_exp, info["spec"], make_codec(train_exp.config))
    module.on_load_checkpoint(state)
    module.load_state_dict(state["state_dict"])
    module.video_config["trained"]["global_step"] = int(state.get("global_step", 0))
    return module.eval()
