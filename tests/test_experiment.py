"""The Experiment object and the ownership rules it rests on: config.py is a schema, each package
checks its own section, run-file names live in rundir.py."""

import ast
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from vfusion.config import ConfigError, load_config
from vfusion.experiment import Experiment, validate

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = ROOT / "configs" / "embedded.yaml"


def _vfusion_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vfusion"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("vfusion"))
    return names


def test_config_module_is_schema_only():
    """config.py may import the error and layout modules of the package, nothing else (also lazily)."""
    assert _vfusion_imports(ROOT / "vfusion" / "config.py") <= {"vfusion.errors", "vfusion.layout"}


def test_run_file_names_are_spelled_only_in_rundir():
    spelled = [p.relative_to(ROOT).as_posix() for p in (ROOT / "vfusion").rglob("*.py")
               if '"metrics.json"' in p.read_text() or '"status.json"' in p.read_text()]
    assert spelled == ["vfusion/rundir.py"]


@pytest.mark.parametrize("override, key", [
    ("data.dataset=nope", "data.dataset"),              # the data registry
    ("noise.prior=nope", "noise.prior"),                # the prior registry
    ("sample.sampler=nope", "sample.sampler"),          # the sampler registry
    ("model.name=nope", "model.name"),                  # the model registry
    ("eval.protocol=nope", "eval.protocol"),            # the evaluation protocols
    ("train.precision=64", "train.precision"),          # the trainer's own section
])
def test_loading_checks_types_and_validate_checks_each_section(override, key):
    cfg = load_config(EMBEDDED, [override])  # the schema accepts any string here
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)


def test_experiment_resolves_once_and_matches_what_it_is_built_from():
    from vfusion.diffusion.noise import noise_prior_from_config

    exp = Experiment.load(EMBEDDED, ["eval.num_videos=12", "sample.num_videos=3"])
    assert exp.process is exp.process and exp.prior is exp.prior  # built once
    reference = noise_prior_from_config(exp.config.noise, int(exp.config.data.num_frames))
    level = torch.tensor([0.0, 0.5, 1.0])
    assert torch.equal(exp.prior.lambdas_at(level), reference.lambdas_at(level))
    assert exp.process.num_train_timesteps == 1000
    # the run's sampling settings, and the evaluation's count, seed and batch over them
    s, e = exp.sample_settings(), exp.sample_settings(for_eval=True, steps=7)
    assert (s.num_videos, e.num_videos, e.steps, e.sampler) == (3, 12, 7, exp.config.sample.sampler)
    # the model spec carries this experiment's process and prior; another frame count gets its own prior
    spec = exp.model_spec(3, 32, int(exp.config.data.num_frames), 4)
    assert spec.process is exp.process and spec.noise is exp.prior
    assert exp.model_spec(3, 32, 1, 4).noise.num_frames == 1


def test_experiment_of_run_reads_the_saved_copy(tmp_path):
    from vfusion.rundir import RunDir, save_config

    cfg = Experiment.load(EMBEDDED, [f"run_dir={tmp_path / 'run'}"]).config
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    save_config(cfg, run.config_path)
    again = Experiment.of_run(run.path)
    assert OmegaConf.to_container(again.config) == OmegaConf.to_container(cfg)


def test_experiment_load_refuses_a_bad_value_naming_the_file():
    with pytest.raises(ConfigError, match=r"embedded\.yaml: .*model\.name"):
        Experiment.load(EMBEDDED, ["model.name=nope"])
