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
                                        "--rounds", "1", "--models", "videofusion,unet3d,latte",
                                        "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert set(got["median"]) == {"videofusion", "unet3d", "latte"}
    for m in got["median"].values():
        assert m["params"] > 0 and m["train_step_s"] > 0 and m["sample_step_s"] > 0 and m["train_flops"] > 0
    # each peer's width is the grid's closest in training FLOPs per clip to VideoFusion's (batch 1 here)
    target = got["videofusion_train_flops_per_clip"]
    assert got["median"]["videofusion"]["train_flops"] == target
    for peer in ("unet3d", "latte"):
        assert got["widths"][peer] in experiment_script("bench_peers").WIDTHS[peer]
        assert 0.25 < got["median"][peer]["train_flops"] / target < 4


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


def test_bench_scaling_on_tiny_clips(tmp_path):
    """Every point is measured and predicted; counted FLOPs follow the cost structure of method.md:
    VideoFusion's are affine in T (C_base + (T-1)·C_res), the video UNet's proportional to T."""
    out, png = tmp_path / "scaling.json", tmp_path / "scaling.png"
    assert experiment_script("bench_scaling").main([
        "--config", str(ROOT / "configs" / "embedded.yaml"), "--frames", "2,4,8", "--sizes", "8,16",
        "--reference", "4,16", "--batch", "1", "--iters", "1", "--rounds", "1", "--ceiling-seconds", "0.2",
        "--json", str(out), "--plot", str(png)]) == 0
    got = json.loads(out.read_text())
    assert got["gemm_flops_per_s"] > 0 and got["conv_flops_per_s"] > 0 and png.stat().st_size > 0
    pts = {(p["model"], p["frames"], p["size"]): p for p in got["points"]}
    assert set(pts) == {(m, t, s) for m in ("videofusion", "video_unet", "dit")
                        for t, s in ((2, 16), (4, 16), (8, 16), (4, 8))}
    for (m, t, s), p in pts.items():
        ref = pts[(m, 4, 16)]
        rate = ref["train_flops"] / ref["train_step_s"]
        assert p["predicted_train_step_s"] == pytest.approx(p["train_flops"] / rate)
        assert p["fraction_of_gemm"] == pytest.approx(p["train_flops"] / p["train_step_s"] / got["gemm_flops_per_s"])
    assert pts[("videofusion", 4, 16)]["measured_over_predicted"] == pytest.approx(1.0)
    vf = [pts[("videofusion", t, 16)]["train_flops"] for t in (2, 4, 8)]
    assert vf[2] - vf[1] == 2 * (vf[1] - vf[0]) and vf[0] > vf[1] - vf[0]  # affine, with a base term
    vu = [pts[("video_unet", t, 16)]["train_flops"] for t in (2, 4, 8)]
    assert vu[1] == 2 * vu[0] and vu[2] == 4 * vu[0]


def test_bench_ddp_one_and_two_processes(tmp_path):
    out = tmp_path / "ddp.json"
    assert experiment_script("bench_ddp").main([
        "--config", str(ROOT / "configs" / "embedded.yaml"), "--steps", "4", "--warmup", "1", "--rounds", "1",
        "--json", str(out), "data.num_frames=4", "data.resolution=16", "model.base.block_out_channels=[8,16]",
        "model.base.norm_num_groups=4", "model.base.attention_resolutions=[]",
        "model.residual.block_out_channels=[8,16]", "model.residual.norm_num_groups=4"]) == 0
    got = json.loads(out.read_text())
    assert [(r["processes"], r["world_size"]) for r in got["runs"]] == [(1, 1), (2, 2)]
    assert got["two_over_one"] == pytest.approx(got["best"]["2"]["clips_per_s"] / got["best"]["1"]["clips_per_s"])


def test_bench_step_options_on_tiny_clips(tmp_path):
    out = tmp_path / "options.json"
    assert experiment_script("bench_step_options").main([
        "--config", str(ROOT / "configs" / "embedded.yaml"), "--variants", "fp32,channels_last,bf16,threads1",
        "--steps", "1", "--warmup", "0", "--rounds", "1", "--json", str(out),
        "data.num_frames=4", "data.resolution=16", "data.batch_size=1"]) == 0
    got = json.loads(out.read_text())
    assert set(got["median"]) == {"fp32", "channels_last", "bf16", "threads1"}
    assert got["median"]["threads1"]["threads"] == 1 and got["median"]["fp32"]["speedup_vs_fp32"] == 1.0
    shares = [op["share"] for op in got["profile_top_ops"]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-9
