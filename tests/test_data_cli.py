"""``vfusion data check`` / ``vfusion data cache`` exit codes and output; shipped data configs load."""

import warnings
from pathlib import Path

import pytest

from test_data_fixtures import sky_tree, ucf_tree
from vfusion.cli import main
from vfusion.experiment import load_experiment_config


def _run(argv, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_check_counts_a_good_tree(tmp_path_factory, capsys):
    root = ucf_tree(tmp_path_factory)
    rc, out, _ = _run(["data", "check", "--dataset", "ucf101", "--root", str(root), "--fold", "2",
                       "--num-frames", "4", "--stride", "3", "--decode"], capsys)
    assert rc == 0
    for line in ("classes      3", "listed       9", "readable     7", "short        1", "unreadable   1",
                 "missing      1", "undecodable  0"):
        assert line in out
    assert "v_Basketball_g04_c01.avi" in out
    rc, out, _ = _run(["data", "check", "--dataset", "sky", "--root", str(sky_tree(tmp_path_factory)),
                       "--split", "all"], capsys)
    assert rc == 0 and "readable     4" in out and "frames       48" in out


def test_check_exit_code_1_on_a_wrong_layout(tmp_path, tmp_path_factory, capsys):
    rc, _, err = _run(["data", "check", "--dataset", "ucf101", "--root", str(tmp_path)], capsys)
    assert rc == 1 and "layout error" in err and "ucfTrainTestlist" in err
    rc, _, err = _run(["data", "check", "--dataset", "ucf101", "--root", str(ucf_tree(tmp_path_factory, "separate"))],
                      capsys)
    assert rc == 1 and "data.splits_dir" in err
    rc, _, err = _run(["data", "check", "--dataset", "sky", "--root", str(ucf_tree(tmp_path_factory))], capsys)
    assert rc == 1 and "sky_train" in err
    rc, _, err = _run(["data", "check", "--dataset", "embedded", "--root", str(tmp_path)], capsys)
    assert rc == 1 and "embedded.json" in err


def test_cache_builds_the_configured_cache(tmp_path, capsys):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"name: t\ndata:\n  dataset: embedded\n  root: {tmp_path / 'emb'}\n  cache_dir: {tmp_path / 'cache'}\n"
                   "  embedded_num_classes: 2\n  embedded_train_per_class: 2\n  embedded_test_per_class: 1\n"
                   "  embedded_size: 32\n  embedded_length: 8\n  num_frames: 4\n  resolution: 16\n  num_workers: 0\n")
    rc, out, _ = _run(["data", "cache", "--config", str(cfg)], capsys)
    assert rc == 0 and "nothing else to build" in out
    rc, out, _ = _run(["data", "cache", "--config", str(cfg), "data.cache=clips"], capsys)
    assert rc == 0 and out.count("clips cache of embedded") == 2       # data.split and data.eval_split
    assert len(list((tmp_path / "cache").glob("clips-embedded-*/manifest.json"))) == 2
    rc, _, err = _run(["data", "cache", "--config", str(cfg), "data.dataset=sky"], capsys)
    assert rc == 2 and "data.cache" in err
    rc, _, err = _run(["data", "cache", "--config", str(cfg), "data.cache=clipz"], capsys)
    assert rc == 2 and "data.cache" in err


@pytest.mark.parametrize("name,conditional,stride", [("ucf101", True, 3), ("sky", False, 1)])
def test_shipped_data_configs_load(name, conditional, stride):
    cfg = load_experiment_config(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml")
    assert cfg.data.dataset == name and cfg.data.class_conditional is conditional
    assert (cfg.data.num_frames, cfg.data.frame_stride, cfg.data.resolution) == (16, stride, 128)
    assert list(cfg.model.base.block_out_channels) == [128, 256, 256, 512]
