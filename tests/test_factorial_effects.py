"""experiments/factorial_effects.py: paired differences per seed, their 95% t-interval and the verdict."""

import csv
import json

import numpy as np
import pytest

from tests.conftest import experiment_script


def _script():
    return experiment_script("factorial_effects")


def _write(study, values):
    study.mkdir()
    with open(study / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["run_id", "cell", "seed", "state", "metric:fvd64_16f", "metric:fvd64_16f_real"])
        w.writeheader()
        for (cell, seed), v in values.items():
            w.writerow({"run_id": f"{cell}_s{seed}", "cell": cell, "seed": seed, "state": "done",
                        "metric:fvd64_16f": v, "metric:fvd64_16f_real": 1.0})
        w.writerow({"run_id": "vunet-ind_s2", "cell": "vunet-ind", "seed": 2, "state": "failed"})


def test_paired_differences_and_verdicts(tmp_path):
    study = tmp_path / "study"
    _write(study, {("vf-l0", 0): 100.0, ("vf-l0", 1): 110.0,
                   ("vf-l0.5", 0): 104.0, ("vf-l0.5", 1): 108.0,   # +4, −2: within seed noise
                   ("vunet-ind", 0): 60.0, ("vunet-ind", 1): 70.0})          # −40, −40: resolved
    assert _script().main(["--study-dir", str(study), "--out", str(tmp_path / "out")]) == 0
    found = {e["comparison"]: e for e in json.loads((tmp_path / "out" / "effects.json").read_text())}
    noise = found["VideoFusion λ 0.5 − λ 0"]
    assert noise["diffs"] == [4.0, -2.0] and noise["mean_diff"] == 1.0 and not noise["resolved"]
    arch = found["video UNet − VideoFusion, independent noise"]
    assert arch["diffs"] == [-40.0, -40.0] and arch["resolved"] and arch["seeds"] == [0, 1]
    assert all(e["metric"] == "fvd64_16f" for e in found.values())  # the _real reference is not a metric
    md = (tmp_path / "out" / "effects.md").read_text()
    assert "within seed noise" in md and "**resolved**: lower" in md


def test_interval_is_the_student_t_interval_of_the_paired_differences(tmp_path):
    """3 seeds: mean ± t(0.975, 2)·s/√3 with the tabulated t = 4.3027; an effect whose seeds all agree in sign
    is still unresolved when its interval holds 0."""
    study = tmp_path / "study"
    _write(study, {("vf-l0", 0): 100.0, ("vf-l0", 1): 100.0, ("vf-l0", 2): 100.0,
                   ("vunet-ind", 0): 70.0, ("vunet-ind", 1): 60.0, ("vunet-ind", 2): 50.0,       # −30, −40, −50
                   ("vf-l0.5", 0): 99.0, ("vf-l0.5", 1): 80.0, ("vf-l0.5", 2): 98.0})  # −1, −20, −2
    assert _script().main(["--study-dir", str(study), "--out", str(tmp_path / "out")]) == 0
    found = {e["comparison"]: e for e in json.loads((tmp_path / "out" / "effects.json").read_text())}
    arch = found["video UNet − VideoFusion, independent noise"]
    half = 4.302652729911275 * 10.0 / 3 ** 0.5
    assert arch["ci95"] == pytest.approx([-40 - half, -40 + half]) and arch["resolved"]
    noise = found["VideoFusion λ 0.5 − λ 0"]
    diffs = np.array([-1.0, -20.0, -2.0])
    half = 4.302652729911275 * diffs.std(ddof=1) / 3 ** 0.5
    assert noise["ci95"] == pytest.approx([diffs.mean() - half, diffs.mean() + half])
    assert noise["ci95"][0] < 0 < noise["ci95"][1] and not noise["resolved"]


def test_missing_results_is_exit_2(tmp_path, capsys):
    assert _script().main(["--study-dir", str(tmp_path)]) == 2
    assert "results.csv" in capsys.readouterr().err
