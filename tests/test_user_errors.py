"""Every mistake a user can make ends in one line naming the problem and the fix, exit code 2, with
nothing written: the probes of the reliability issue, through the real CLI (in-process ``main`` where
only the exit code and message matter, a subprocess where the absence of a traceback does)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, tiny_config, tiny_loader, tiny_spec
from vfusion.cli import main

BASE = str(ROOT / "configs" / "embedded.yaml")


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_error(capsys, rc, *words):
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from vfusion.training.runner import fit

    run = tmp_path_factory.mktemp("errors") / "run"
    fit(tiny_config(run, "train.max_steps=2"), train_loader=tiny_loader(), spec_info=tiny_spec())
    return run


@pytest.mark.parametrize("override,words", [
    ("noise.value=1.5", ("noise", "outside [0, 1]")),
    ("noise.schedule=list", ("noise", "needs 'values'")),
    ("data.num_frames=1", ("data.num_frames", "VideoFusion needs at least 2 frames")),
    ("data.resolution=30", ("30x30", "down-sampling of model.base")),
    ("data.batch_size=0", ("data.batch_size",)),
    ("train.optim.lr=0", ("train.optim.lr",)),
    ("pretrain.lr=-1", ("pretrain.lr",)),
    ("train.max_steps=-1 train.max_minutes=0", ("train.max_steps", "max_minutes")),
    ("train.max_minutes=-5", ("train.max_minutes",)),
    ("sample.guidance_scale=-2", ("sample.guidance_scale",)),
    ("sample.steps=0", ("sample.steps",)),
    ("sample.steps=5000", ("sample.steps", "1000 training timesteps")),
    ("model.name=dit", ("patch_size",)),  # with the DiT patch below: 32 is not divisible by 5
])
def test_bad_config_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, override, words):
    monkeypatch.chdir(tmp_path)
    extra = ["model.dit.patch_size=5"] if override == "model.name=dit" else []
    rc = main(["train", "--config", BASE, *override.split(), *extra, f"run_dir={tmp_path / 'run'}"])
    _one_line_error(capsys, rc, *words)
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize("args,words", [
    (["--steps", "-5"], ("-5 sampling steps",)), (["--steps", "0"], ("0 sampling steps",)),
    (["--batch-size", "0"], ("batch size 0",)), (["--num-videos", "0"], ("0 videos",)),
    (["--guidance", "-1"], ("negative",)), (["--steps", "5000"], ("1000 training timesteps",)),
])
def test_sample_rejects_bad_counts_before_writing(trained, tmp_path, capsys, args, words):
    out = tmp_path / "samples"
    rc = main(["sample", "--run", str(trained), "--out", str(out), *args])
    _one_line_error(capsys, rc, *words)
    assert not out.exists()


@pytest.mark.parametrize("args,words", [
    (["--steps", "-5"], ("--steps -5",)), (["--num-videos", "0"], ("--num-videos 0",)),
    (["--batch-size", "0"], ("--batch-size 0",)), (["--guidance", "-0.5"], ("negative",)),
])
def test_evaluate_rejects_bad_counts_and_keeps_metrics(trained, capsys, args, words):
    metrics = trained / "metrics.json"
    metrics.write_text(json.dumps({"metrics": {"fvd2_4f": 1.0}}))
    before = metrics.read_bytes()
    rc = main(["evaluate", "--run", str(trained), "--metrics", "fvd", *args])
    _one_line_error(capsys, rc, *words)
    assert metrics.read_bytes() == before


def test_refused_resume_leaves_the_run_directory_as_it_was(trained):
    from vfusion.errors import UserError
    from vfusion.training.runner import fit

    before = _snapshot(trained)
    other = tiny_config(trained, "train.max_steps=4", "model.residual.block_out_channels=[8,8]")
    with pytest.raises(UserError, match="residual.block_out_channels"):
        fit(other, resume=True, train_loader=tiny_loader(), spec_info=tiny_spec())
    assert _snapshot(trained) == before


def test_truncated_checkpoint_is_named_and_nothing_is_written(trained, tmp_path, capsys):
    import shutil

    from vfusion.errors import UserError
    from vfusion.training.runner import fit

    run = tmp_path / "copy"
    shutil.copytree(trained, run)
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    before = _snapshot(run)
    with pytest.raises(UserError, match=r"cannot read the checkpoint .*last\.ckpt"):
        fit(tiny_config(run, "train.max_steps=4"), resume=True, train_loader=tiny_loader(), spec_info=tiny_spec())
    assert _snapshot(run) == before
    rc = main(["export", "--run", str(run)])
    _one_line_error(capsys, rc, "last.ckpt", "truncated")


def test_broken_base_model_folders_name_the_file(tmp_path):
    from diffusers import UNet2DModel

    from vfusion.errors import UserError
    from vfusion.models.unet2d import load_unet

    good = tmp_path / "good"
    UNet2DModel(sample_size=16, block_out_channels=(8, 16), norm_num_groups=4, layers_per_block=1,
                down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2).save_pretrained(str(good))
    bad_json = tmp_path / "bad_json"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{not json")
    with pytest.raises(UserError, match=r"bad_json/config\.json is not a readable diffusers config"):
        load_unet(bad_json)
    import shutil

    for name, damage in (("missing", lambda f: f.unlink()), ("truncated", lambda f: f.write_bytes(f.read_bytes()[:100]))):
        d = tmp_path / name
        shutil.copytree(good, d)
        damage(next(d.glob("*.safetensors")))
        with pytest.raises(UserError, match=f"cannot load the UNet in .*{name}"):
            load_unet(d)


@pytest.mark.slow  # several CLI processes: ~30-45 s; the fast suite stays under 5 minutes
def test_no_traceback_in_a_real_process_and_debug_shows_it(tmp_path):
    cmd = [sys.executable, "-m", "vfusion", "train", "--config", BASE, "noise.value=1.5", f"run_dir={tmp_path / 'r'}"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("VFUSION_DEBUG", None)
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "outside [0, 1]" in out.stderr
    debug = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=dict(env, VFUSION_DEBUG="1"))
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    assert not (tmp_path / "r").exists()


def test_unexpected_errors_are_one_line_with_exit_1(monkeypatch, capsys):
    import vfusion.training.commands as commands

    def boom(args):
        raise RuntimeError("something\nunexpected")

    monkeypatch.setattr(commands, "cmd_export", boom)
    rc = main(["export", "--run", "x"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and "VFUSION_DEBUG=1" in err and "something unexpected" in err


NOISE = ("Tip:", "litlogger", "weights_only", "LeafSpec", "accelerate", "eval mode", "exists and is not empty",
         "Traceback")


@pytest.mark.slow  # a whole pipeline run in a fresh process: ~30-45 s; the fast suite stays under 5 minutes
def test_a_normal_run_prints_no_third_party_noise(tmp_path):
    """Train (fresh, then resumed) and sample through the real CLI: none of the notices users complained about."""
    small = ["data.num_frames=4", "data.resolution=16", "data.batch_size=2", "data.num_workers=0",
             "data.embedded_train_per_class=2", "data.embedded_test_per_class=1",
             f"data.root={tmp_path / 'data'}", f"data.cache_dir={tmp_path / 'cache'}",
             "model.base.block_out_channels=[8,16]", "model.base.norm_num_groups=4",
             "model.residual.block_out_channels=[8,16]", "model.residual.norm_num_groups=4",
             "train.progress_bar=false", "train.max_minutes=0", f"run_dir={tmp_path / 'run'}"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = lambda *a: subprocess.run([sys.executable, "-m", "vfusion", *a], capture_output=True, text=True,  # noqa
                                    cwd=tmp_path, env=env)
    outs = [run("train", "--config", BASE, "train.max_steps=2", *small),
            run("train", "--resume", str(tmp_path / "run"), "train.max_steps=3"),
            run("sample", "--run", str(tmp_path / "run"), "--num-videos", "1", "--steps", "2")]
    for out in outs:
        assert out.returncode == 0, out.stderr[-3000:]
        text = out.stdout + out.stderr
        assert not [w for w in NOISE if w in text], text[-3000:]


def test_help_texts_are_plain_words():
    """Every command's --help (and its sub-commands') shows no reStructuredText markup and no notes
    meant for developers."""
    import argparse

    from vfusion.cli import build_parser

    def parsers(p):
        yield p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    for p in parsers(build_parser()):
        text = p.format_help()
        assert "``" not in text and "CLI:" not in text and ":func:" not in text, p.prog
