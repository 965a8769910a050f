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
    # the plain-word answer: one row per noise comparison against independent noise, none for architecture
    answer = md.split("## Does sharing noise help?")[1].split("## Factor effects")[0]
    assert "| VideoFusion λ 0.5 − λ 0 | unresolved +1 [" in answer
    assert "video UNet − VideoFusion" not in answer


def test_sharing_answer_words_follow_the_interval():
    mod = _script()
    rows = [{"comparison": "DiT decomposed λ 0.5 − independent", "metric": "fvd64_16f", "mean_diff": -30.0,
             "ci95": [-40.0, -20.0], "resolved": True},
            {"comparison": "DiT decomposed λ 0.5 − independent", "metric": "flicker64_16f", "mean_diff": 2.0,
             "ci95": [1.0, 3.0], "resolved": True},
            {"comparison": "DiT decomposed λ 0.5 − independent", "metric": "kvd64_16f", "mean_diff": 2.0,
             "ci95": None, "resolved": False}]
    line = next(l for l in mod.sharing_answer(rows).splitlines() if l.startswith("| DiT"))
    assert line == "| DiT decomposed λ 0.5 − independent | **helps** -30 [-40, -20] | 1 seed +2 | **hurts** +2 [+1, +3] |"


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


def test_metrics_with_a_real_value_are_compared_by_their_gap_to_it(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    cols = ["run_id", "cell", "seed", "state", "metric:flicker64_16f", "metric:flicker64_16f_real",
            "metric:motion_ratio64_16f"]
    with open(study / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        for cell, seed, flicker, ratio in [("vf-l0", 0, 8.0, 1.5), ("vf-l0", 1, 9.0, 1.6), ("vf-l0", 2, 8.5, 1.4),
                                           ("vf-l0.5", 0, 3.0, 0.9), ("vf-l0.5", 1, 5.0, 1.05),
                                           ("vf-l0.5", 2, 4.25, 1.0)]:
            w.writerow({"run_id": f"{cell}_s{seed}", "cell": cell, "seed": seed, "state": "done",
                        "metric:flicker64_16f": flicker, "metric:flicker64_16f_real": 4.0,
                        "metric:motion_ratio64_16f": ratio})
    assert _script().main(["--study-dir", str(study), "--out", str(tmp_path / "out")]) == 0
    found = {e["metric"]: e for e in json.loads((tmp_path / "out" / "effects.json").read_text())}
    flicker = found["flicker64_16f"]  # gaps 4, 5, 4.5 -> 1, 1, 0.25: below the real value counts as far as above
    assert flicker["real"] == 4.0 and flicker["diffs"] == [-3.0, -4.0, -4.25] and flicker["resolved"]
    assert flicker["measure"] == "|value − real|" and flicker["reference_value_mean"] == 8.5
    ratio = found["motion_ratio64_16f"]
    assert ratio["real"] == 1.0 and ratio["diffs"] == pytest.approx([0.1 - 0.5, 0.05 - 0.6, 0.0 - 0.4])
    assert (tmp_path / "out" / "effects.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "out" / "effects.md").read_text()
    assert "![effects](effects.png)" in md
    # the per-cell table: flicker mean 4.083 with its interval over 3 seeds, the real value beside it
    assert "| vf-l0.5 | 3 | 4.083 [" in md and "| real clips | | 4 | 1 |" in md
    assert "### flicker64_16f: |value − 4| (real)" in md and "closer to real" in md
