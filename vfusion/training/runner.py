"""Run directories and the one training entry point (stage 1 and stage 2).

A run directory tells its story::

    runs/<name>/
      config.yaml        the resolved experiment config (sample/evaluate read it back)
      env.json           git SHA, Python, package versions, devices
      run_info.json      data spec (channels, size, frames, classes), stage
      model_info.json    parameter counts (trainable/frozen) and measured time per training step
      checkpoints/       last.ckpt (+ periodic step checkpoints), written atomically
      tb/                TensorBoard logs
      base_unet/         stage 1 only: the base UNet in diffusers format (EMA weights)
      samples/           videos written by `vfusion sample`

Training resumes from ``checkpoints/last.ckpt`` with ``--resume``; an existing run
is never overwritten silently.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from vfusion.config import ConfigError, load_config, run_dir_of, save_config, to_dict
from vfusion.models.unet2d import count_parameters
from vfusion.training.callbacks import SampleLogger
from vfusion.training.checkpoint_io import AtomicCheckpointIO
from vfusion.training.lit_module import VideoDiffusionModule
from vfusion.utils.io import atomic_write_json, environment_info

log = logging.getLogger(__name__)


class RunExistsError(ConfigError):
    pass


def last_checkpoint(run_dir: Path) -> Optional[Path]:
    p = Path(run_dir) / "checkpoints" / "last.ckpt"
    return p if p.is_file() else None


def resume_config(run_dir: str | Path, overrides: Optional[list[str]] = None) -> DictConfig:
    """The saved config of an existing run, with optional overrides (e.g. more steps)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"'{run_dir}' is not a vfusion run directory (no config.yaml)")
    cfg = load_config(path, overrides)
    cfg.run_dir = str(run_dir)
    return cfg


def prepare_run_dir(cfg: DictConfig, resume: bool) -> Path:
    run_dir = run_dir_of(cfg)
    ckpt = last_checkpoint(run_dir)
    if ckpt is not None and not resume:
        raise RunExistsError(f"run directory '{run_dir}' already holds a checkpoint ({ckpt}); pass --resume to "
                             f"continue it, or choose a new directory with run_dir=... (or name=...)")
    if resume and ckpt is None:
        log.warning("--resume: no checkpoint in %s yet, starting from scratch", run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    atomic_write_json(run_dir / "env.json", environment_info())
    return run_dir


def spec_info_for(cfg: DictConfig) -> tuple[dict, object]:
    """Model-facing facts of the data: channels, size, frames, classes; plus the VAE codec if any."""
    from vfusion.data import dataset_info

    info = dataset_info(cfg.data)
    num_classes = int(info["num_classes"]) if cfg.data.class_conditional else 0
    codec = make_codec(cfg)
    in_channels, size = 3, int(cfg.data.resolution)
    if codec is not None:
        in_channels, size = codec.latent_channels, size // codec.downsample
    return {"in_channels": in_channels, "sample_size": size, "num_frames": int(cfg.data.num_frames),
            "num_classes": num_classes, "class_names": list(info.get("class_names", []))}, codec


def make_codec(cfg: DictConfig):
    """The VAE ``LatentCodec`` when the experiment works on latents (``data.vae_path``), else None."""
    if not cfg.data.vae_path:
        return None
    from vfusion.data.latents import LatentCodec

    return LatentCodec(cfg.data.vae_path, cfg.data.vae_scaling_factor)


def _model_spec_info(spec_info: dict) -> dict:
    return {k: spec_info[k] for k in ("in_channels", "sample_size", "num_frames", "num_classes")}


def build_trainer(cfg: DictConfig, run_dir: Path, max_steps: int, max_minutes: float, callbacks=()) -> L.Trainer:
    t = cfg.train
    ckpt_cb = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="step{step:07d}", auto_insert_metric_name=False,
                              every_n_train_steps=max(1, t.checkpoint_every_n_steps), save_last=True, save_top_k=1)
    cbs = [ckpt_cb, *callbacks]
    if t.progress_bar:
        cbs.append(TQDMProgressBar(refresh_rate=max(1, t.log_every_n_steps // 2)))
    return L.Trainer(
        default_root_dir=str(run_dir), max_steps=max_steps, max_epochs=-1,
        max_time={"minutes": max_minutes} if max_minutes and max_minutes > 0 else None,
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
        precision=t.precision, gradient_clip_val=t.optim.grad_clip or None, log_every_n_steps=t.log_every_n_steps,
        logger=TensorBoardLogger(str(run_dir), name="tb", version="", default_hp_metric=False),
        callbacks=cbs, plugins=[AtomicCheckpointIO()], enable_progress_bar=t.progress_bar,
        enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=True,
    )


def fit(cfg: DictConfig, stage: str = "video", resume: bool = False, train_loader=None,
        spec_info: Optional[dict] = None, extra_callbacks=()) -> Path:
    """Train stage 1 (``pretrain``: base UNet on frames) or stage 2 (``video``). Returns the run dir."""
    run_dir = prepare_run_dir(cfg, resume)
    if spec_info is None:
        spec_info, codec = spec_info_for(cfg)
    else:
        codec = make_codec(cfg)
    atomic_write_json(run_dir / "run_info.json", {"stage": stage, "spec": spec_info})
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    module = VideoDiffusionModule(to_dict(cfg), _model_spec_info(spec_info), stage=stage)
    if codec is not None:
        module.set_codec(codec)
    if train_loader is None:
        from vfusion.data import build_dataloader

        batch = cfg.data.batch_size
        if stage == "pretrain":  # enough clips to draw pretrain.batch_size frames
            batch = max(1, -(-cfg.pretrain.batch_size // cfg.data.num_frames))
        train_loader = build_dataloader(cfg.data, split=cfg.data.split, train=True, seed=int(cfg.seed),
                                        batch_size=batch)
    p = cfg.pretrain if stage == "pretrain" else cfg.train
    callbacks = [SampleLogger(cfg.train.sample_every_n_steps)] if stage == "video" else []
    callbacks += list(extra_callbacks)
    trainer = build_trainer(cfg, run_dir, int(p.max_steps), float(p.max_minutes), callbacks)
    ckpt = last_checkpoint(run_dir) if resume else None
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=train_loader, ckpt_path=str(ckpt) if ckpt else None)
    trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    if trainer.is_global_zero:
        write_model_info(run_dir, module, trainer, time.perf_counter() - start)
        if stage == "pretrain":
            export_base_unet(module, run_dir / cfg.pretrain.output_subdir)
    return run_dir


def write_model_info(run_dir: Path, module: VideoDiffusionModule, trainer: L.Trainer, wall_s: float) -> None:
    model = module.model
    parts = {"total": count_parameters(model)}
    for name in ("base", "residual"):
        if hasattr(model, name):
            parts[name] = count_parameters(getattr(model, name))
    atomic_write_json(run_dir / "model_info.json", {
        "model": module.cfg.model.name if module.stage == "video" else "image_unet (stage 1)",
        "parameters": parts, "global_step": trainer.global_step,
        "mean_train_step_s": module.mean_step_time(), "fit_wall_s_this_session": wall_s,
        "device": str(module.device),
    })


def export_base_unet(module: VideoDiffusionModule, out_dir: Path) -> Path:
    """Save the stage-1 UNet (EMA weights) with ``save_pretrained``, replacing ``out_dir`` atomically."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with module.ema_model() as model:
        model.unet.save_pretrained(str(tmp))
    old = out_dir.with_name(out_dir.name + ".old")
    if out_dir.exists():
        shutil.rmtree(old, ignore_errors=True)
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir


def load_module(run_dir: str | Path, device: str | torch.device = "cpu") -> VideoDiffusionModule:
    """The trained module of a run (checkpoint weights + EMA), in eval mode."""
    run_dir = Path(run_dir)
    ckpt = last_checkpoint(run_dir)
    info_path = run_dir / "run_info.json"
    if ckpt is None or not info_path.is_file():
        raise ConfigError(f"'{run_dir}' has no trained model (expected config.yaml, run_info.json and "
                          "checkpoints/last.ckpt; run `vfusion train` first)")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    from vfusion.config import merge_config

    cfg = merge_config(cfg)
    info = json.loads(info_path.read_text())
    module = VideoDiffusionModule(to_dict(cfg), _model_spec_info(info["spec"]), stage=info["stage"])
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    module.on_load_checkpoint(state)
    module.load_state_dict(state["state_dict"])
    codec = make_codec(cfg)
    if codec is not None:
        module.set_codec(codec)
    module.spec_info["class_names"] = info["spec"].get("class_names", [])
    return module.to(device).eval()
