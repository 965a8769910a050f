"""Lightning fit, resume, checkpoints, stage 1 export, parameter groups."""

import json

import pytest
import torch

from tests.conftest import tiny_config, tiny_loader, tiny_spec
from vfusion.config import ConfigError
from vfusion.models.base_generator import base_network
from vfusion.models.spec import ModelSpec
from vfusion.training.lit_module import CheckpointMismatchError
from vfusion.training.runner import RunExistsError, build_module, fit, module_from_checkpoint


def test_fit_then_resume_continues_from_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(run, "train.max_steps=4")
    fit(cfg, train_loader=tiny_loader(), spec_info=tiny_spec())
    ck = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ck["global_step"] == 4 and "ema" in ck
    with pytest.raises(RunExistsError, match="--resume"):
        fit(cfg, train_loader=tiny_loader(), spec_info=tiny_spec())
    cfg2 = tiny_config(run, "train.max_steps=7")
    fit(cfg2, resume=True, train_loader=tiny_loader(), spec_info=tiny_spec())
    ck2 = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ck2["global_step"] == 7
    info = json.loads((run / "model_info.json").read_text())
    assert info["global_step"] == 7 and info["parameters"]["base"]["trainable"] > 0
    assert (run / "config.yaml").is_file() and (run / "env.json").is_file()
    env = json.loads((run / "env.json").read_text())
    assert env["packages"]["torch"]
    # TensorBoard got the component losses
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for f in (run / "tb").glob("events.*"):
        acc = EventAccumulator(str(f))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"train/loss", "train/loss_base", "train/loss_residual"} <= tags


def test_checkpoint_from_another_model_is_refused(tmp_path):
    run = tmp_path / "run"
    fit(tiny_config(run, "train.max_steps=2"), train_loader=tiny_loader(), spec_info=tiny_spec())
    other = tiny_config(run, "train.max_steps=4", "model.residual.block_out_channels=[8,8]")
    with pytest.raises(CheckpointMismatchError, match="residual.block_out_channels"):
        fit(other, resume=True, train_loader=tiny_loader(), spec_info=tiny_spec())


def test_base_lr_multiplier_and_freeze(tmp_path):
    cfg = tiny_config(tmp_path, "model.base.lr_mult=0.1", "train.optim.lr=0.001")
    m = build_module(cfg, tiny_spec())
    groups = {g["name"]: g for g in m.configure_optimizers()["optimizer"].param_groups}
    assert groups["base"]["lr"] == pytest.approx(1e-4) and groups["residual"]["lr"] == pytest.approx(1e-3)
    assert len(groups["base"]["params"]) == len(list(m.model.base.parameters()))
    cfg = tiny_config(tmp_path, "model.base.freeze=true")
    m = build_module(cfg, tiny_spec())
    groups = m.configure_optimizers()["optimizer"].param_groups
    assert [g["name"] for g in groups] == ["residual"]
    assert not any(p.requires_grad for p in m.model.base.parameters())


def test_pretrain_exports_diffusers_unet_loadable_as_base(tmp_path):
    run = tmp_path / "base"
    cfg = tiny_config(run, "pretrain.max_steps=3")
    fit(cfg, stage="pretrain", train_loader=tiny_loader(), spec_info=tiny_spec())
    out = run / "base_unet"
    assert (out / "config.json").is_file()
    module = module_from_checkpoint(run)
    spec = ModelSpec(3, 16, 4, 2)
    cfg2 = tiny_config(tmp_path / "v", f"model.base.pretrained={out}")
    unet = base_network(cfg2.model.base, spec)
    with module.ema_model() as m:
        ema_state = {k: v.clone() for k, v in m.unet.state_dict().items()}
    for k, v in unet.state_dict().items():
        assert torch.allclose(v, ema_state[k]), k


def test_class_dropout_uses_null_label(tmp_path):
    cfg = tiny_config(tmp_path, "model.class_dropout=0.5")
    m = build_module(cfg, tiny_spec())
    torch.manual_seed(0)
    from vfusion.conditioning import Cond

    cond = Cond(class_labels=torch.zeros(1000, dtype=torch.long)).drop(m.class_dropout)
    y = cond.label_ids(2, 1000, "cpu")
    frac = (y == 2).float().mean().item()
    assert set(y.unique().tolist()) == {0, 2} and 0.4 < frac < 0.6


def test_resume_of_missing_run_dir_is_clear(tmp_path):
    from vfusion.training.runner import resume_config

    with pytest.raises(ConfigError, match="not a vfusion run directory"):
        resume_config(tmp_path / "nope")


def test_a_minute_cap_that_stops_training_is_recorded(tmp_path, caplog):
    run = tmp_path / "run"
    cfg = tiny_config(run, "train.max_steps=500", "train.max_minutes=0.0005")  # 0.03 s: stops after a step or two
    with caplog.at_level("WARNING"):
        fit(cfg, train_loader=tiny_loader(), spec_info=tiny_spec())
    info = json.loads((run / "model_info.json").read_text())
    early = info["stopped_early"]
    assert early["of"] == 500 and early["steps"] == info["global_step"] < 500
    assert "train.max_minutes" in early["reason"] and "STOPPED EARLY" in caplog.text
    fit(tiny_config(tmp_path / "full", "train.max_steps=2"), train_loader=tiny_loader(), spec_info=tiny_spec())
    assert json.loads((tmp_path / "full" / "model_info.json").read_text())["stopped_early"] is None


@pytest.mark.parametrize("per_clip", [pytest.param(1, marks=pytest.mark.slow), 2])  # ~11 s each
def test_stage1_draws_its_frames_from_more_shorter_clips(tmp_path, per_clip):
    """``pretrain.frames_per_clip``: stage 1 loads clips of that many frames, pretrain.batch_size / frames_per_clip
    of them, and trains on single frames from all of them (with 1, the loader's frames are the batch)."""
    from vfusion.data import build_dataloader
    from vfusion.training.runner import stage1_config

    cfg = tiny_config(tmp_path / "run", "data.dataset=embedded", f"data.root={tmp_path / 'data'}",
                      f"data.cache_dir={tmp_path / 'cache'}", "data.embedded_num_classes=2",
                      "data.embedded_train_per_class=4", "data.embedded_test_per_class=1", "data.embedded_size=32",
                      "data.embedded_length=8", "pretrain.max_steps=2", f"pretrain.frames_per_clip={per_clip}")
    c1 = stage1_config(cfg)
    assert int(c1.data.num_frames) == per_clip and int(c1.data.batch_size) == 8 // per_clip
    from vfusion.data import ensure_embedded

    ensure_embedded(cfg.data, progress=False)
    x, y = next(iter(build_dataloader(c1.data, split=c1.data.split, train=True, seed=0)))
    assert tuple(x.shape) == (8 // per_clip, 3, per_clip, 16, 16) and y.shape == (8 // per_clip,)
    run = fit(cfg, stage="pretrain")
    assert (run / "base_unet" / "config.json").is_file()
    assert int(stage1_config(tiny_config(tmp_path / "r2")).data.num_frames) == 4   # unset: whole clips


def test_frames_per_clip_is_at_least_one_and_at_most_the_clip(tmp_path):
    from vfusion.training.runner import stage1_config

    with pytest.raises(ConfigError, match="pretrain.frames_per_clip.*expected >= 1"):
        tiny_config(tmp_path / "run", "pretrain.frames_per_clip=0")
    c1 = stage1_config(tiny_config(tmp_path / "run", "pretrain.frames_per_clip=5"))   # clips of 4 frames
    assert int(c1.data.num_frames) == 4 and int(c1.data.batch_size) == 2


def test_a_checkpoint_from_before_attention_resolutions_still_fits(tmp_path):
    """Checkpoints written before the keys existed have no ``attention_resolutions`` / ``temporal_resolutions``;
    at their default (null)
    the architecture is the same, so they resume. A set value is a different architecture."""
    from vfusion.training.lit_module import check_signature

    m = build_module(tiny_config(tmp_path), tiny_spec())
    old = json.loads(json.dumps(m.signature))
    for section in ("base", "residual"):
        del old["model"][section]["attention_resolutions"]
    del old["model"]["residual"]["temporal_resolutions"]
    check_signature({"vfusion": {"signature": old}}, m.signature)
    other = build_module(tiny_config(tmp_path, "model.base.attention_resolutions=[8]"), tiny_spec())
    with pytest.raises(CheckpointMismatchError, match="attention_resolutions"):
        check_signature({"vfusion": {"signature": old}}, other.signature)
