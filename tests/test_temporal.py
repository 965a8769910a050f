"""Temporal pixel statistics (values on clips whose answer is known by construction) and the shared
zero-initialised temporal layers of vfusion.models.temporal."""

from __future__ import annotations

import pytest
import torch

from vfusion.evaluation.temporal import frame_change, keyframe_drift


def test_a_still_clip_has_no_change_and_no_drift():
    still = torch.rand(1, 3, 1, 8, 8).expand(2, 3, 6, 8, 8) * 2 - 1
    assert torch.equal(frame_change(still), torch.zeros(2))
    assert torch.equal(keyframe_drift(still), torch.zeros(2))


def test_a_linear_ramp_in_time():
    # frame t has value -1 + 0.1 t everywhere: consecutive frames differ by 0.1 = 12.75 grey levels,
    # frame t differs from the keyframe (t = 3 of 7) by 0.1 |t - 3|
    t = torch.arange(7, dtype=torch.float32)
    clip = (-1 + 0.1 * t).view(1, 1, 7, 1, 1).expand(1, 3, 7, 4, 4)
    torch.testing.assert_close(frame_change(clip), torch.tensor([12.75]))
    expected = 127.5 * 0.1 * torch.tensor([3, 2, 1, 1, 2, 3.0]).mean()
    torch.testing.assert_close(keyframe_drift(clip), expected.view(1))


def test_flicker_scores_higher_than_the_same_frames_in_a_smooth_order():
    frames = torch.linspace(-1, 1, 8).view(1, 1, 8, 1, 1).expand(1, 3, 8, 2, 2)
    flicker = frames[:, :, [0, 7, 1, 6, 2, 5, 3, 4]]
    assert frame_change(flicker) > 3 * frame_change(frames)


def test_clips_must_have_a_time_axis():
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\) with T >= 2"):
        frame_change(torch.zeros(1, 3, 1, 4, 4))
    with pytest.raises(ValueError, match="T >= 2"):
        keyframe_drift(torch.zeros(3, 4, 4))


def _load_script():
    from tests.conftest import experiment_script

    return experiment_script("temporal_consistency")


def test_study_script_pools_finished_runs_by_grid_cell(tmp_path):
    """experiments/temporal_consistency.py reads each finished run's sample .mp4 files back and pools the
    seeds of a cell; a still clip stays near 0 after the codec, a flickering one does not; unfinished runs
    are left out."""
    import json

    from vfusion.utils.video import save_videos

    still = torch.zeros(2, 3, 8, 32, 32).uniform_(-0.5, 0.5)[:, :, :1].expand(2, 3, 8, 32, 32)
    flicker = torch.where(torch.arange(8).view(1, 1, 8, 1, 1) % 2 == 0, -0.8, 0.8).expand(2, 3, 8, 32, 32)
    for run, label, state, clips in [("still_s0", "still", "done", still), ("still_s1", "still", "done", still),
                                      ("flick_s0", "flick", "done", flicker), ("flick_s1", "flick", "training", flicker)]:
        d = tmp_path / "runs" / run
        save_videos(clips, d / "samples")
        (d / "status.json").write_text(json.dumps({"state": state, "labels": {"model": label}}))
    cells = _load_script().run_cells(tmp_path)
    assert set(cells) == {"still", "flick"}
    assert len(cells["still"]["frame_change"]) == 4 and len(cells["flick"]["frame_change"]) == 2
    assert max(cells["still"]["frame_change"]) < 2.0
    assert min(cells["flick"]["frame_change"]) > 150.0  # ±0.8 alternating: 204 grey levels before the codec


# --------------------------------------------------------------------------- the shared temporal layers

@pytest.mark.parametrize("kind", ["conv", "attention", "both"])
def test_mixer_is_the_identity_bit_for_bit_at_init(kind):
    from vfusion.models.temporal import TemporalMixer

    torch.manual_seed(0)
    mixer = TemporalMixer(16, kind, num_heads=4, norm_groups=4)
    h = torch.randn(2 * 5, 16, 4, 4)  # (B*T, C, H, W)
    with torch.no_grad():
        assert torch.equal(mixer(h, num_frames=5), h)
    assert all(not layer.weight.any() for layer in mixer.output_layers())


def test_hook_acts_only_inside_mixing_frames():
    from torch import nn

    from vfusion.models.temporal import TemporalHook, TemporalMixer, mixing_frames

    torch.manual_seed(0)
    layer = nn.Conv2d(8, 8, 1)
    hook = TemporalHook(TemporalMixer(8, "conv", norm_groups=4))
    layer.register_forward_hook(hook)
    with torch.no_grad():
        hook.mixer.output_layers()[0].weight.normal_()
    h = torch.randn(6, 8, 2, 2)
    with torch.no_grad():
        plain = layer(h)
        with mixing_frames([hook], 3):
            mixed = layer(h)
        assert not torch.equal(mixed, plain) and torch.equal(layer(h), plain)
        with pytest.raises(RuntimeError, match="boom"):
            with mixing_frames([hook], 3):
                raise RuntimeError("boom")
    assert hook.num_frames is None  # reset even when the forward fails


def test_both_models_use_the_one_temporal_module():
    from vfusion.experiment import resolve_config
    from vfusion.models.residual_generator import ResidualGenerator
    from vfusion.models.temporal import TemporalHook, TemporalMixer
    from vfusion.models.unet2d import build_unet
    from vfusion.models.video_unet import VideoUNet

    base = resolve_config({"name": "t", "model": {"base": {"block_out_channels": [8, 16], "norm_num_groups": 4}}})
    unet = build_unet(base.model.base, 3, 3, 8)
    video = VideoUNet(unet_config=dict(unet.config), temporal_layers="conv", unet=unet)
    residual = ResidualGenerator(sample_size=8, num_frames=4, block_out_channels=(8, 16), norm_num_groups=4,
                                 temporal="attention")
    for hooks in (video.temporal, residual.temporal_layers):
        assert len(hooks) and all(type(h) is TemporalHook and type(h.mixer) is TemporalMixer for h in hooks)
    assert len(residual.temporal_layers) == 1  # the residual generator: one, at its bottleneck


def test_x0_consistency_counts_only_the_coarse_change():
    """experiments/x0_consistency.py: the frame-to-frame change of 4x4 block means, checked against a numpy
    computation; a checkerboard that flips sign every frame keeps every block mean, so its coarse change is
    0 while its pixel change is large."""
    import numpy as np

    from tests.conftest import experiment_script

    coarse_change = experiment_script("x0_consistency").coarse_change
    torch.manual_seed(0)
    clips = torch.rand(2, 3, 5, 8, 8) * 2 - 1
    blocks = clips.numpy().reshape(2, 3, 5, 2, 4, 2, 4).mean(axis=(4, 6))
    expected = np.abs(np.diff(blocks, axis=2)).mean() * 127.5
    assert coarse_change(clips) == pytest.approx(float(expected), rel=1e-5)

    board = torch.where((torch.arange(8).view(8, 1) + torch.arange(8).view(1, 8)) % 2 == 0, 0.5, -0.5)
    sign = torch.tensor([1.0, -1.0] * 3)[:6].view(1, 1, 6, 1, 1)
    flipping = (sign * board).expand(1, 3, 6, 8, 8)
    assert coarse_change(flipping) == pytest.approx(0.0, abs=1e-6)
    assert frame_change(flipping).item() == pytest.approx(127.5)


def test_object_tracking_follows_a_disk_by_its_colour():
    """vfusion.evaluation.objects: a red disk moved by whole pixels is seen in every frame with a constant
    area, steps of exactly the shift and a travel of the whole path; the same disk fading into the
    background is lost once its colour is too pale for the mask."""
    import numpy as np

    import vfusion.evaluation.objects as motion
    ys, xs = np.mgrid[0:32, 0:32]
    clip = np.tile(np.array([0.85, 0.8, 0.7]), (12, 32, 32, 1))
    for t in range(12):
        disk = (xs - (5 + 2 * t)) ** 2 + (ys - 16) ** 2 <= 16
        clip[t][disk] = (0.85, 0.15, 0.15)
    row = motion.track(clip, motion.red_ball)
    assert row["seen"] == 1.0 and row["area_cv"] == 0.0
    assert row["step"] == pytest.approx(2.0) and row["jump"] == pytest.approx(2.0)
    assert row["travel"] == pytest.approx(22.0)

    background = np.array([0.85, 0.8, 0.7])
    alpha = np.linspace(1, 0, 12).reshape(12, 1, 1, 1)
    fading = background + alpha * (clip - background)
    row = motion.track(fading, motion.red_ball)
    # the mask needs r - g = 0.05 + 0.65 alpha > 0.3, i.e. alpha > 0.385: frames 0..6 of alpha = 1 - t / 11
    assert row["seen"] == pytest.approx(7 / 12)


def test_object_motion_keyframe_change_isolates_a_keyframe_that_stands_out():
    """Only the keyframe (8 of 16) differs from a still clip, by 0.2: the two pairs at it change by 0.2 * 255
    grey levels, the other 13 pairs not at all."""
    import numpy as np

    from tests.conftest import experiment_script

    clips = np.full((2, 16, 4, 4, 3), 0.5)
    clips[:, 8] += 0.2
    row = experiment_script("object_motion").keyframe_change(clips)
    assert row["key_change"] == pytest.approx(51.0) and row["other_change"] == 0.0


def test_object_tracking_sees_the_embedded_objects_move():
    """The colour masks find the ball and the bob of the embedded dataset's own renderer in every frame, and
    they travel (the renderer moves them by at least 0.025 of the frame per step)."""
    import vfusion.evaluation.objects as motion
    from vfusion.data.embedded import render_clip

    for name in motion.TRACKED:
        for clip in range(3):
            frames = render_clip(name, seed=0, clip=clip, size=32, length=16).astype("float32") / 255
            row = motion.track(frames, motion.TRACKED[name])
            assert row["seen"] == 1.0, (name, clip, row)
            assert row["travel"] > 3.0, (name, clip, row)


def test_dataset_batches_with_labels_reads_each_clip_once():
    """clip_sources.dataset_batches(with_labels=True): the same clips as without, in index order, with each
    clip's own label, from one read per clip."""
    from torch.utils.data import Dataset

    from vfusion.evaluation.clip_sources import dataset_batches

    class Clips(Dataset):
        def __init__(self):
            self.reads = []

        def __len__(self):
            return 6

        def __getitem__(self, i):
            self.reads.append(i)
            return torch.full((3, 2, 4, 4), float(i)), 10 + i

    data = Clips()
    pairs = list(dataset_batches(data, [4, 1, 3], batch_size=2, with_labels=True))
    assert sorted(data.reads) == [1, 3, 4]
    clips = torch.cat([c for c, _ in pairs])
    labels = torch.cat([lab for _, lab in pairs])
    assert labels.tolist() == [14, 11, 13] and clips[:, 0, 0, 0, 0].tolist() == [4.0, 1.0, 3.0]
    assert torch.equal(torch.cat(list(dataset_batches(data, [4, 1, 3], batch_size=2))), clips)
