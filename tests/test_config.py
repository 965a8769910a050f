"""Structured configs: unknown keys, wrong types, bad choices fail with the key's name."""

import pytest

from vfusion.config import ConfigError
from vfusion.experiment import load_experiment_config, resolve_config


def test_defaults_and_override():
    cfg = resolve_config({"name": "x"}, overrides=["train.max_steps=5", "noise.value=0.25"])
    assert cfg.train.max_steps == 5 and cfg.noise.value == 0.25


@pytest.mark.parametrize("overrides,match", [
    (["train.max_stepz=5"], "train.max_stepz"),
    (["train.max_steps=lots"], "train.max_steps"),
    (["model.name=unet9000"], "model.name"),
    (["sample.sampler=heun9000"], "sample.sampler"),  # euler is a sampler now (flow processes)
    (["data.fold=4"], "data.fold"),
    (["max_steps"], "key=value"),
])
def test_bad_overrides_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        resolve_config({"name": "x"}, overrides=overrides)


def test_unknown_key_in_yaml(tmp_path):
    p = tmp_path / "exp.yaml"
    p.write_text("name: x\nmodel:\n  base:\n    lr_multiplier: 0.2\n")
    with pytest.raises(ConfigError, match="model.base.lr_multiplier"):
        load_experiment_config(p)


def test_missing_name_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="name"):
        resolve_config({})
    with pytest.raises(ConfigError, match="does not exist"):
        load_experiment_config(tmp_path / "nope.yaml")


def test_every_shipped_config_loads():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    files = [p for p in root.glob("*.yaml")]
    assert files, "no configs shipped"
    for p in files:
        load_experiment_config(p)
