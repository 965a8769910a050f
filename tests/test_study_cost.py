"""experiments/study_cost.py: FLOPs counted per clip scale exactly with the batch, and the projection
adds up (train steps from the budget as the study harness sets them, sampling, stage 1, GPU-hours)."""

import json

import pytest

from tests.conftest import ROOT, experiment_script, tiny_config, tiny_spec
from vfusion.training.flops import denoise_flops, run_step_flops


def _script():
    return experiment_script("study_cost")


@pytest.mark.parametrize("model", ["videofusion", "video_unet", "dit"])
def test_step_flops_are_linear_in_the_batch(tmp_path, model):
    one = tiny_config(tmp_path, f"model.name={model}", "data.batch_size=1")
    three = tiny_config(tmp_path, f"model.name={model}", "data.batch_size=3")
    assert run_step_flops(three, tiny_spec()) == 3 * run_step_flops(one, tiny_spec())
    assert denoise_flops(one, tiny_spec(), 3) == 3 * denoise_flops(one, tiny_spec(), 1)


def test_projection_of_a_study(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(f"""
name: cost_check
base: {ROOT / 'configs' / 'embedded.yaml'}
overrides: [model.base.pretrained=@stage1, sample.steps=7, sample.guidance_scale=2.0]
budget: {{flops: 3.0e12}}
seeds: [0, 1]
grid:
  cell:
    - {{label: vf, overrides: []}}
    - {{label: vunet, overrides: [model.name=video_unet]}}
stage1: {{steps: 11, per_seed: false}}
eval: {{metrics: [fvd], num_videos: 20}}
""")
    out = tmp_path / "cost.json"
    mod = _script()
    assert mod.main(["--config", str(study), "--mfu", "0.5", "--peak-tflops", "100",
                     "--json", str(out)]) == 0
    cost = json.loads(out.read_text())
    cells = {c["cell"]: c for c in cost["cells"]}
    assert set(cells) == {"vf", "vunet"} and all(c["runs"] == 2 for c in cells.values())
    for c in cells.values():
        assert c["train_steps"] == max(1, int(3.0e12) // c["train_flops_per_step"])
        assert c["train_flops"] == c["train_steps"] * c["train_flops_per_step"] <= 3.0e12
        assert c["sample_clips"] == 20 and c["sample_steps"] == 7
        assert c["sample_flops"] == c["sample_flops_per_clip_step"] * 7 * 20
    # the video UNet runs the base UNet on every frame: dearer per step, so fewer steps
    assert cells["vunet"]["train_flops_per_step"] > cells["vf"]["train_flops_per_step"]
    assert cells["vunet"]["train_steps"] < cells["vf"]["train_steps"]
    s1 = cost["stage1"]
    assert s1["count"] == 1 and s1["steps"] == 11 and s1["flops"] == 11 * s1["train_flops_per_step"]
    total = sum(2 * (c["train_flops"] + c["sample_flops"]) for c in cells.values()) + s1["flops"]
    assert cost["total_flops"] == total
    assert cost["gpu_hours_total"] == pytest.approx(total / (100e12 * 0.5) / 3600)


def test_bad_mfu_is_one_line_and_exit_2(capsys):
    assert _script().main(["--config", "x.yaml", "--mfu", "1.5"]) == 2
    assert "--mfu" in capsys.readouterr().err
