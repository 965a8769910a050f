"""Committed results say what made them, and the current ones still match what today's code would run.

A current folder's ``provenance.json`` holds a hash of each run's resolved config; re-resolving its study
with today's code and defaults must give the same hashes, or the folder's numbers are stale (re-run it, or
move it to ``experiments/results/archive/``).
"""

import dataclasses
import json

import pytest

from tests.conftest import ROOT
from vfusion.studies.provenance import PROVENANCE_FILE, config_hash, config_record, readme_block, resolved_configs, stale_runs

RESULTS = ROOT / "experiments" / "results"
FOLDERS = sorted(p for p in [*RESULTS.iterdir(), *(RESULTS / "archive").iterdir()]
                 if p.is_dir() and p.name != "archive")
# an unfinished study is checked too: the runs still to come must be made with the configs already recorded
CURRENT = [p for p in FOLDERS
           if json.loads((p / PROVENANCE_FILE).read_text()).get("status") in ("current", "in progress")]


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: str(p.relative_to(RESULTS)))
def test_every_results_folder_opens_with_its_provenance(folder):
    record = json.loads((folder / PROVENANCE_FILE).read_text())
    assert record["command"] and record["date"] and record["commit"] and record["config_hashes"]
    assert len(record["config_keys"]) > 100  # every key of the schema the runs were resolved with
    assert (ROOT / record["study_file"]).exists()
    assert (folder / "README.md").read_text().startswith(readme_block(record))
    assert (record["status"] == "archived") == (folder.parent.name == "archive")
    assert record["status"] == "current" or record["why"]


def test_the_index_lists_every_folder_with_its_status():
    index = (RESULTS / "README.md").read_text()
    for folder in FOLDERS:
        status = json.loads((folder / PROVENANCE_FILE).read_text())["status"]
        line = next((ln for ln in index.splitlines() if f"[`{folder.relative_to(RESULTS)}/`]" in ln), None)
        assert line is not None, f"{folder.name} is missing from experiments/results/README.md"
        assert line.rstrip(" |").split("|")[-1].strip().startswith(status)


@pytest.mark.parametrize("folder", CURRENT, ids=lambda p: p.name)
def test_current_results_match_todays_configs(folder):
    record = json.loads((folder / PROVENANCE_FILE).read_text())
    stale = stale_runs(record, ROOT)
    assert not stale, (f"{folder.relative_to(ROOT)} is stale: these runs' resolved configs changed "
                       f"(recorded, today): {stale}; re-run the command in its README, or move the folder to "
                       "experiments/results/archive/ with a line saying why")


def _keep_checkpoints_default(monkeypatch, value):
    from vfusion.config import ExperimentConfig, TrainConfig

    train = next(f for f in dataclasses.fields(ExperimentConfig) if f.name == "train")
    monkeypatch.setattr(train, "default_factory", lambda: TrainConfig(keep_checkpoints=value))


def test_a_changed_default_makes_a_result_stale(monkeypatch):
    """The check sees schema defaults, not only the config file: move one default and every run differs."""
    from vfusion.config import TrainConfig

    record = {"study_file": "configs/embedded.yaml", "overrides": [], **config_record(ROOT / "configs/embedded.yaml")}
    assert stale_runs(record, ROOT) == {}
    _keep_checkpoints_default(monkeypatch, TrainConfig().keep_checkpoints + 1)
    stale = stale_runs(record, ROOT)
    assert set(stale) == set(record["config_hashes"])
    assert all(old != new for old, new in stale.values())


def test_a_key_added_since_the_record_is_not_stale(monkeypatch):
    """A key the record does not cover (an option added since) is not hashed, so it cannot make the result
    stale; a recorded key that no longer exists (an option removed) does."""
    from vfusion.config import TrainConfig

    configs = resolved_configs(ROOT / "configs/embedded.yaml")
    full = config_record(ROOT / "configs/embedded.yaml")
    keys = [k for k in full["config_keys"] if k != "train.keep_checkpoints"]  # as if recorded before it existed
    record = {"study_file": "configs/embedded.yaml", "overrides": [], "config_keys": keys,
              "config_hashes": {k: config_hash(c, keys) for k, c in configs.items()}}
    _keep_checkpoints_default(monkeypatch, TrainConfig().keep_checkpoints + 1)
    assert stale_runs(record, ROOT) == {}
    record["config_keys"] = keys + ["train.an_option_since_removed"]
    assert set(stale_runs(record, ROOT)) == set(record["config_hashes"])
