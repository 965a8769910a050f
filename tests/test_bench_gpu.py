"""experiments/bench_gpu.py on the CPU at toy sizes: every model and variant runs, and its figures are
the ratios they claim to be (MFU = counted FLOPs / step time / the given peak)."""

import json

import pytest
import torch

from tests.conftest import experiment_script


def _run(tmp_path, *args):
    out = tmp_path / "gpu.json"
    assert experiment_script("bench_gpu").main(["--tiny", "--steps", "3", "--warmup", "1", "--peak-tflops", "2",
                                                 "--peak-tflops-fp32", "0.5", "--json", str(out), *args]) == 0
    return json.loads(out.read_text())


@pytest.mark.slow
def test_every_model_in_fp32_and_bf16(tmp_path):
    got = _run(tmp_path, "--variants", "fp32,bf16")
    rows = {(r["model"], r["variant"]): r for r in got["rows"]}
    assert set(rows) == {(m, v) for m in ("videofusion", "video_unet", "dit") for v in ("fp32", "bf16")}
    for (model, variant), r in rows.items():
        step_s = r["step_ms"] / 1000
        peak = 2.0 if variant == "bf16" else 0.5
        assert r["loss_finite"] and r["flops_per_step"] > 0 and not r["fused_adamw"]  # CPU: auto is off
        assert r["mfu"] == pytest.approx(r["flops_per_step"] / step_s / (peak * 1e12))
        assert r["frames_per_s"] == pytest.approx(r["batch"] * r["frames"] / step_s)
        assert (r["tokens_per_s"] is not None) == (model == "dit")
        # the FLOPs are the model's (counted in fp32 before any switch), the same for both variants
        assert r["flops_per_step"] == rows[(model, "fp32")]["flops_per_step"]
    dit = rows[("dit", "fp32")]
    assert dit["tokens_per_s"] == pytest.approx(dit["frames_per_s"] * (16 // 4) ** 2)
    assert got["peaks_tflops"]["bf16"] == 2.0 and got["source"] == "--peak-tflops"


@pytest.mark.slow
def test_flops_per_step_is_the_counted_training_step(tmp_path):
    """The script's FLOPs are train_step_flops of the model it builds: rebuilt here from the same config."""
    from vfusion.training.flops import train_step_flops
    from vfusion.training.runner import build_module

    bench = experiment_script("bench_gpu")
    got = _run(tmp_path, "--models", "videofusion", "--variants", "fp32")
    cfg = bench.model_configs("configs/studies/factorial_ucf101.yaml", ["videofusion"],
                              ["train.sample_every_n_steps=0", *bench.TINY])["videofusion"]
    info = bench._spec_info(cfg, 101)
    module = build_module(cfg, info)
    assert got["rows"][0]["flops_per_step"] == train_step_flops(module, bench._batch(cfg, info, torch.device("cpu")))


def test_unknown_variant_is_refused(tmp_path, capsys):
    assert experiment_script("bench_gpu").main(["--tiny", "--variants", "fp8"]) == 2
    assert "unknown variant" in capsys.readouterr().err
