"""The motion metric (optical flow) against known motion, and the object metrics through the evaluation core:
a pattern moved k pixels a frame measures k, a still clip 0 whatever its brightness does, time reversal
changes nothing; a disk moved along a known path gives its path's travel and step."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vfusion.cli import main
from vfusion.evaluation.motion import clip_motion
from vfusion.evaluation.temporal import frame_change
from vfusion.utils.video import save_videos


def texture(size=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.avg_pool2d(torch.rand(1, 3, size, size, generator=g), 3, 1, 1) * 2 - 1


def moving(dx, dy=0, frames=8, size=32, seed=0):
    """A window of a smooth random texture moved (dx, dy) pixels a frame: the content moves by exactly that."""
    tex = texture(seed=seed)
    return torch.stack([tex[:, :, 20 + dy * i:20 + dy * i + size, 20 + dx * i:20 + dx * i + size]
                        for i in range(frames)], dim=2)


@pytest.mark.parametrize("dx,dy", [(1, 0), (2, 0), (3, 0), (0, 2), (2, 2)])
def test_a_translated_pattern_measures_its_shift(dx, dy):
    assert clip_motion(moving(dx, dy)).item() == pytest.approx(np.hypot(dx, dy), rel=0.02)


def test_a_still_clip_measures_no_motion_even_when_its_brightness_flickers():
    still = texture()[:, :, :32, :32].unsqueeze(2).expand(1, 3, 8, 32, 32)
    assert clip_motion(still).item() < 0.02
    flickering = (still + torch.tensor([0.0, 0.1] * 4).view(1, 1, 8, 1, 1)).clamp(-1, 1)
    assert frame_change(flickering).item() > 10  # grey levels: flicker sees it
    assert clip_motion(flickering).item() < 0.3   # flow does not


def test_time_reversal_gives_the_same_motion():
    clip = moving(2, 1, seed=3)
    assert clip_motion(clip.flip(2)).item() == pytest.approx(clip_motion(clip).item(), rel=0.01)


def test_cli_folders_print_motion_its_real_value_and_the_ratio(tmp_path, capsys):
    real = torch.cat([moving(2, seed=s) for s in range(3)])
    fake = torch.cat([moving(1, seed=s + 10) for s in range(3)])
    save_videos(real, tmp_path / "real")
    save_videos(fake, tmp_path / "fake")
    assert main(["evaluate", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"),
                 "--metrics", "motion", "--no-progress"]) == 0
    lines = dict(line.split("\t") for line in capsys.readouterr().out.strip().splitlines())
    assert set(lines) == {"motion3_8f", "motion3_8f_real", "motion_ratio3_8f"}
    assert float(lines["motion3_8f_real"]) == pytest.approx(2.0, rel=0.1)   # through H.264: not exact
    assert float(lines["motion3_8f"]) == pytest.approx(1.0, rel=0.1)
    assert float(lines["motion_ratio3_8f"]) == pytest.approx(0.5, rel=0.1)
    result = json.loads((tmp_path / "fake" / "metrics.json").read_text())
    p = result["protocol"]["motion"]
    assert p["estimator"].startswith("OpenCV") and p["parameters"]["winsize"] == 15 and "pixels" in p["unit"]


def red_disk_clip(path, frames=10, size=32):
    """A red disk on beige at the given centres, as a clip (1, 3, T, H, W) in [-1, 1]."""
    ys, xs = np.mgrid[0:size, 0:size]
    clip = np.tile(np.array([0.85, 0.8, 0.7]), (frames, size, size, 1))
    for t, (cx, cy) in enumerate(path):
        clip[t][(xs - cx) ** 2 + (ys - cy) ** 2 <= 16] = (0.85, 0.15, 0.15)
    return torch.from_numpy(clip).float().permute(3, 0, 1, 2)[None] * 2 - 1


def test_object_metrics_through_the_evaluation_core():
    """Real balls move 2 px a frame, generated ones 1 px with one 5 px jump; a clip of an untracked class
    (label 1) counts in neither."""
    from vfusion.evaluation.core import ClipSource, evaluate
    from vfusion.evaluation.detectors import Detectors

    names = ["BouncingBall", "DriftingClouds"]
    real = torch.cat([red_disk_clip([(5 + 2 * t, 16) for t in range(10)]), red_disk_clip([(16, 16)] * 10)])
    fake_path = [(5 + t, 16) for t in range(5)] + [(14 + t, 16) for t in range(5)]
    fake = torch.cat([red_disk_clip(fake_path), torch.zeros(1, 3, 10, 32, 32)])
    src = lambda clips, labels: ClipSource(iter([(clips, torch.tensor(labels))]), {}, num=2,  # noqa: E731
                                           class_names=names)
    det = Detectors(device="cpu", info={})
    out = evaluate(src(real, [0, 1]), src(fake, [0, 1]), ["objects"], det, progress=False)["metrics"]
    assert out["object_travel2_10f_real"] == pytest.approx(18.0) and out["object_jump2_10f_real"] == 2.0
    assert out["object_travel2_10f"] == pytest.approx(13.0) and out["object_jump2_10f"] == pytest.approx(5.0)
    assert out["object_seen2_10f"] == out["object_seen2_10f_real"] == 1.0


def test_object_metrics_on_unlabelled_folders_are_refused_in_one_line(tmp_path, capsys):
    save_videos(moving(1), tmp_path / "real")
    save_videos(moving(1, seed=2), tmp_path / "fake")
    assert main(["evaluate", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"),
                 "--metrics", "objects", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "class" in err


def test_motion_diagnosis_reads_each_metric_by_its_stem():
    """experiments/motion_diagnosis.py picks ``motion_ratio32_16f``, not ``motion32_16f``, for the ratio, and the
    ``_real`` values only when asked; the first ball and the first pendulum clip make a cell's filmstrip."""
    from tests.conftest import experiment_script

    diag = experiment_script("motion_diagnosis")
    row = {"metric:motion32_16f": "0.6", "metric:motion32_16f_real": "0.8", "metric:motion_ratio32_16f": "0.75",
           "fvd32_16f": "640",
           "object_travel32_16f": "", "object_travel32_16f_real": "19.1"}
    assert diag._metric(row, "motion_ratio") == 0.75 and diag._metric(row, "motion") == 0.6
    assert diag._metric(row, "motion", real=True) == 0.8 and diag._metric(row, "fvd") == 640.0
    assert diag._metric(row, "object_travel") is None and diag._metric(row, "object_travel", real=True) == 19.1
    clips = torch.arange(4.0).view(4, 1, 1, 1, 1).expand(4, 3, 2, 2, 2)
    names = ["BouncingBall", "SwingingPendulum", "DriftingClouds"]
    picked = diag.pick(clips, [2, 1, 0, 1], names)
    assert picked[:, 0, 0, 0, 0].tolist() == [2.0, 1.0]  # the ball (label 0) first, then the pendulum
