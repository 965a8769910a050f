"""The benchmark scripts run end to end on tiny sizes and write the figures they print (slow: each
starts several processes or trains a few steps; the figures themselves are machine-dependent)."""

import json

import pytest

from tests.conftest import ROOT, experiment_script

pytestmark = pytest.mark.slow



def test_bench_peers_on_tiny_clips(tmp_path):
    out = tmp_path / "peers.json"
    assert experiment_script("bench_peers").main(["--config", str(ROOT / "configs" / "embedded.yaml"), "--batch", "1",
                                        "--frames", "4", "--size", "16", "--iters", "1", "--warmup", "0",
                                        "--rounds", "1", "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert set(got["median"]) == {"videofusion", "video_unet", "dit", "unet3d"}
    for m in got["median"].values():
        assert m["params"] > 0 and m["train_step_s"] > 0 and m["sample_step_s"] > 0


def test_bench_trainer_on_a_few_steps(tmp_path):
    out = tmp_path / "trainer.json"
    assert experiment_script("bench_trainer").main(["--config", str(ROOT / "configs" / "embedded.yaml"), "--steps", "5",
                                          "--warmup", "2", "--rounds", "1", "--json", str(out),
                                          "data.num_frames=4", "data.resolution=16", "data.batch_size=1"]) == 0
    got = json.loads(out.read_text())
    assert set(got["median_ms"]) == {"lightning", "bare"} and all(v > 0 for v in got["median_ms"].values())
    assert got["overhead"] == pytest.approx(got["median_ms"]["lightning"] / got["median_ms"]["bare"] - 1)
    assert 0 <= got["trainer_own_ms"] < got["median_ms"]["lightning"] and len(got["trainer_own_ms_per_round"]) == 1


def test_bench_gpu_compiles_with_inductor(tmp_path):
    out = tmp_path / "gpu.json"
    assert experiment_script("bench_gpu").main(["--tiny", "--models", "dit", "--variants", "fp32,compile",
                                                "--steps", "3", "--warmup", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == ["fp32", "compile"] and all(r["loss_finite"] for r in rows)
