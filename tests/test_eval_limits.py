"""Evaluation limits are refused before any training, with the key that fixes them (the real checks,
on a small embedded dataset; no detector is loaded)."""

from pathlib import Path

import pytest
import torch

from conftest import ROOT, TINY_OVERRIDES, tiny_config
from vfusion.cli import main
from vfusion.errors import UserError
from vfusion.evaluation import limits

BASE = str(ROOT / "configs" / "embedded.yaml")


def small_data(root, test_per_class=3):
    """One class: 8 train clips, ``test_per_class`` test clips of 12 frames at 16x16."""
    return [f"data.root={root}", "data.embedded_num_classes=1", "data.embedded_train_per_class=8",
            f"data.embedded_test_per_class={test_per_class}", "data.embedded_size=32", "data.embedded_length=12",
            "data.class_conditional=false"]


def pipeline(tmp_path, capsys, *overrides):
    """``vfusion pipeline`` on the tiny config; (exit code, stderr, whether a run folder was made)."""
    run = tmp_path / "run"
    rc = main(["pipeline", "--config", BASE, *TINY_OVERRIDES, f"run_dir={run}", *overrides])
    made = run.exists() or run.with_name("run_base").exists()
    return rc, capsys.readouterr().err, made


def test_too_few_clips_for_is_is_refused_before_stage_1(tmp_path, capsys):
    rc, err, made = pipeline(tmp_path, capsys, *small_data(tmp_path / "d"), "data.num_frames=9",
                             "eval.metrics=[is]", "eval.num_videos=8")
    assert rc == 2 and not made
    assert "is_k400_i3d needs at least 10 generated clips (got 8)" in err and "eval.num_videos" in err


def test_clips_too_short_for_i3d_are_refused_before_stage_1(tmp_path, capsys):
    rc, err, made = pipeline(tmp_path, capsys, *small_data(tmp_path / "d"), "eval.metrics=[flicker,fvd]")
    assert rc == 2 and not made
    assert "fvd needs clips of at least 9 frames" in err and "data.num_frames" in err and "these have 4" in err


def test_a_split_smaller_than_eval_num_videos_is_refused_with_its_size(tmp_path, capsys):
    rc, err, made = pipeline(tmp_path, capsys, *small_data(tmp_path / "d"), "data.num_frames=9",
                             "eval.metrics=[fvd]", "eval.num_videos=10")
    assert rc == 2 and not made
    assert "the 'test' split of embedded has 3 clips" in err
    assert "lower eval.num_videos to 3" in err and "eval.real_split" in err


def test_the_floor_needs_two_halves_of_two_clips(tmp_path, capsys):
    data = small_data(tmp_path / "d")
    rc, err, made = pipeline(tmp_path, capsys, *data, "eval.metrics=[flicker]", "eval.num_videos=3")
    assert rc == 2 and not made
    assert "two halves of at least 2 real clips" in err and "has 3 (halves of 1)" in err
    assert "eval.real_vs_real=false" in err
    from vfusion.evaluation.evaluate import preflight

    cfg = tiny_config(tmp_path / "run", *data, "eval.metrics=[flicker]", "eval.num_videos=3")
    preflight(cfg, floor=False)  # without the floor the same evaluation is fine


def test_the_floor_gives_flicker_and_drift_and_skips_metrics_without_one(tmp_path):
    from vfusion.evaluation.evaluate import real_vs_real
    from vfusion.studies.harness import _wants_floor
    from vfusion.studies.spec import single_run_study

    cfg = tiny_config(tmp_path / "run", *small_data(tmp_path / "d", test_per_class=4))
    result = real_vs_real(cfg, num_videos=2, metrics=["flicker", "drift"], progress=False)
    assert set(result["metrics"]) == {"flicker2_4f", "flicker2_4f_real", "drift2_4f", "drift2_4f_real"}
    assert result["protocol"]["num_real"] == 2 and result["protocol"]["num_fake"] == 2
    assert all(v > 0 for v in result["metrics"].values())
    only_is = single_run_study(BASE, [*TINY_OVERRIDES, "eval.metrics=[is]"])
    assert only_is.spec.eval.real_vs_real and not _wants_floor(only_is)  # no floor asked of IS, no failure
    assert _wants_floor(single_run_study(BASE, [*TINY_OVERRIDES, "eval.metrics=[is,drift]"]))
    assert not _wants_floor(single_run_study(BASE, [*TINY_OVERRIDES, "eval.metrics=[fvd]", "eval.real_vs_real=false"]))


def test_a_name_never_claims_more_real_clips_than_were_read():
    from vfusion.evaluation.core import ClipSource, evaluate
    from vfusion.evaluation.detectors import Detectors

    read = []

    def clips(n):
        read.append(n)
        yield torch.zeros(n, 3, 9, 16, 16)

    real, fake = ClipSource(clips(3), {}, num=3), ClipSource(clips(10), {}, num=10)
    with pytest.raises(UserError, match="would compare 10 generated clips with only 3 real ones: lower --num-videos"):
        evaluate(real, fake, ["fvd"], Detectors())
    assert read == []  # refused before a clip was read


def test_limits_table_matches_the_detectors():
    from vfusion.evaluation.i3d import I3D_MIN_FRAMES
    from vfusion.evaluation.metrics import IS_NUM_SPLITS

    assert limits.NEEDS["kvd"].real == limits.NEEDS["kvd"].fake == 2
    assert limits.NEEDS["is_k400_i3d"].fake == IS_NUM_SPLITS == 10
    assert limits.NEEDS["fvd"].frames == I3D_MIN_FRAMES == 9
    limits.check_counts(["fid"], 1, 1, num_frames=4)  # 4 images a side
    with pytest.raises(UserError, match="fid needs at least 2 real clips"):
        limits.check_counts(["fid"], 1, 1, num_frames=1)


def test_stage_1_batch_hint_names_pretrain_batch_size(tmp_path):
    from vfusion.data.errors import DatasetError
    from vfusion.training.runner import fit

    cfg = tiny_config(tmp_path / "run", *small_data(tmp_path / "d"), "pretrain.batch_size=64")
    with pytest.raises(DatasetError) as err:
        fit(cfg, stage="pretrain")
    msg = str(err.value)
    assert "fewer than one batch of 16" in msg and "lower pretrain.batch_size" in msg
    assert "data.batch_size" not in msg
    assert not Path(cfg.run_dir, "checkpoints").exists()
