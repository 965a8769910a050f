"""A run directory can be copied or moved: its config.yaml records paths relative to itself (or absolute),
and a stage-2 run keeps its own copy of the stage-1 base."""

import json
import shutil
from pathlib import Path

import yaml
from conftest import ROOT, TINY_OVERRIDES, tiny_config

from vfusion.cli import main

BASE = str(ROOT / "configs" / "embedded.yaml")
DATA = ["data.embedded_num_classes=2", "data.embedded_train_per_class=2", "data.embedded_test_per_class=2",
        "data.embedded_size=32", "data.embedded_length=8"]


def _stage1(tmp_path: Path) -> Path:
    """A folder laid out as stage 1 leaves it: run_info.json (stage pretrain) beside base_unet/."""
    base = tmp_path / "s1" / "base_unet"
    base.mkdir(parents=True)
    (base / "config.json").write_text("{}")
    (tmp_path / "s1" / "run_info.json").write_text(json.dumps({"stage": "pretrain"}))
    return base


def test_recorded_paths_are_relative_to_the_run_or_absolute(tmp_path, monkeypatch):
    from vfusion.rundir import RunDir
    from vfusion.runpaths import keep_base, recorded_config
    from vfusion.rundir import save_config

    monkeypatch.chdir(tmp_path)
    _stage1(tmp_path)
    run = RunDir("runs/r")
    cfg = tiny_config(run.path, "data.root=data/emb", "data.cache_dir=cache", "eval.real_stats_dir=runs/r/stats",
                      "model.base.pretrained=s1/base_unet")
    rec = recorded_config(cfg, run.path)
    assert rec.data.root == str(tmp_path / "data" / "emb") and rec.data.cache_dir == str(tmp_path / "cache")
    assert rec.eval.real_stats_dir == "stats" and rec.model.base.pretrained == "base"
    assert rec.data.splits_dir is None and cfg.model.base.pretrained == "s1/base_unet"  # cfg itself unchanged
    keep_base(cfg, run.path)
    assert (run.base_dir / "config.json").is_file() and not (tmp_path / "runs" / "r" / "base.tmp").exists()
    save_config(rec, run.config_path)
    # moved and read from elsewhere: the relative paths point into the moved run, the others stay
    shutil.move("runs/r", "moved")
    (tmp_path / "moved" / "stats").mkdir()
    monkeypatch.chdir(tmp_path / "s1")
    back = RunDir(tmp_path / "moved").config(["train.max_steps=3"])
    assert back.model.base.pretrained == str(tmp_path / "moved" / "base")
    assert back.eval.real_stats_dir == str(tmp_path / "moved" / "stats")
    assert back.data.root == str(tmp_path / "data" / "emb") and back.train.max_steps == 3


def test_a_base_that_is_not_a_stage1_output_is_recorded_where_it_is(tmp_path, monkeypatch):
    from vfusion.runpaths import keep_base, recorded_config

    monkeypatch.chdir(tmp_path)
    base = _stage1(tmp_path)
    (tmp_path / "s1" / "run_info.json").write_text(json.dumps({"stage": "video"}))
    cfg = tiny_config(tmp_path / "run", "model.base.pretrained=s1/base_unet")
    assert recorded_config(cfg, tmp_path / "run").model.base.pretrained == str(base)
    keep_base(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "base").exists()


def test_a_run_saved_with_cwd_relative_paths_still_reads_them_as_given(tmp_path):
    from vfusion.rundir import RunDir

    run = tmp_path / "old"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "old", "data": {"root": "data/embedded"},
                                                     "model": {"base": {"pretrained": "runs/old_base/base_unet"}}}))
    cfg = RunDir(run).config()
    assert cfg.data.root == "data/embedded" and cfg.model.base.pretrained == "runs/old_base/base_unet"


def test_a_moved_run_works_from_any_folder_without_its_stage1(tmp_path, monkeypatch):
    """`vfusion pipeline` with relative paths (data, runs) from one folder; the run is moved, stage 1 deleted,
    and export, sample, evaluate and train --resume work on the moved run from a third folder, writing
    nothing there."""
    start, elsewhere, other = tmp_path / "start", tmp_path / "elsewhere", tmp_path / "other"
    for d in (start, elsewhere, other):
        d.mkdir()
    monkeypatch.setattr("vfusion.utils.video.write_mp4", lambda path, video, fps=8: Path(path))
    monkeypatch.chdir(start)
    assert main(["pipeline", "--config", BASE, "--skip-eval", *TINY_OVERRIDES, *DATA, "data.root=data",
                 "data.cache_dir=cache", "pretrain.max_steps=1", "train.max_steps=2", "sample.num_videos=2"]) == 0
    run = elsewhere / "run"
    shutil.move(str(start / "runs" / "embedded_videofusion"), str(run))
    shutil.rmtree(start / "runs" / "embedded_videofusion_base")
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["base"]["pretrained"] == "base"

    monkeypatch.chdir(other)
    assert main(["export", "--run", str(run)]) == 0
    assert main(["sample", "--run", str(run), "--num-videos", "1", "--steps", "2"]) == 0
    assert main(["evaluate", "--run", str(run), "--metrics", "flicker", "--num-videos", "2", "--steps", "2",
                 "--no-progress"]) == 0
    assert "flicker2_4f" in json.loads((run / "metrics.json").read_text())["metrics"]
    assert main(["train", "--resume", str(run), "train.max_steps=3"]) == 0
    info = json.loads((run / "model_info.json").read_text())
    assert info["global_step"] == 3
    assert list(other.iterdir()) == []  # no dataset, cache or run written where the commands ran
