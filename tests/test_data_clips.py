"""Clip sampling (start, stride, short policies) and the spatial transform."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vfusion.data.clips import (cache_positions, center_crop_resize, clip_indices, clip_span, eval_position,
                                is_short, to_clip)


def test_span_and_shortness():
    assert clip_span(16, 3) == 46
    assert is_short(45, 16, 3) and not is_short(46, 16, 3)


def test_long_video_every_start_reachable_with_exact_stride():
    n, t, s = 30, 4, 3                                  # span 10 -> starts 0..20
    starts = set()
    for u in np.linspace(0, 1, 500, endpoint=False):
        idx = clip_indices(n, t, s, "skip", float(u))
        assert np.array_equal(np.diff(idx), [s] * (t - 1))
        assert idx[0] >= 0 and idx[-1] < n
        starts.add(int(idx[0]))
    assert starts == set(range(21))
    assert clip_indices(30, 4, 3, "skip", 0.0)[0] == 0
    assert clip_indices(30, 4, 3, "skip", 0.999999)[-1] == 29


def test_short_policies():
    assert clip_indices(9, 4, 3, "skip", 0.3) is None
    # lower_stride: 9 frames fit 4 frames at stride 2 (span 7), not 3 (span 10)
    idx = clip_indices(9, 4, 3, "lower_stride", 0.0)
    assert np.array_equal(idx, [0, 2, 4, 6])
    assert clip_indices(9, 4, 3, "lower_stride", 0.999)[-1] == 8
    # loop: playback wraps around at the requested stride
    assert np.array_equal(clip_indices(9, 4, 3, "loop", 0.5), [4, 7, 1, 4])
    # lower_stride on a video shorter than the clip itself loops at stride 1
    assert np.array_equal(clip_indices(3, 5, 3, "lower_stride", 0.0), [0, 1, 2, 0, 1])
    assert np.array_equal(clip_indices(1, 3, 2, "loop", 0.7), [0, 0, 0])
    with pytest.raises(ValueError, match="short policy"):
        clip_indices(9, 4, 3, "pad", 0.0)


def test_cache_and_eval_positions_are_deterministic():
    assert cache_positions(1) == [0.5]
    assert cache_positions(4) == [0.125, 0.375, 0.625, 0.875]
    assert eval_position(0, 5) == eval_position(0, 5)
    assert eval_position(0, 5) != eval_position(1, 5)
    assert len({eval_position(0, i) for i in range(50)}) == 50


def test_center_crop_resize_keeps_the_center_square():
    frames = np.zeros((2, 240, 320, 3), np.uint8)
    frames[:, :, :40] = 255                              # left band: cropped away
    frames[:, :, 280:] = 255                             # right band: cropped away
    frames[:, :, 40:280, 0] = np.arange(240, dtype=np.uint8)[None, :, None]   # vertical ramp in red
    out = center_crop_resize(frames, 64)
    assert out.shape == (2, 64, 64, 3) and out.dtype == torch.uint8
    assert out[..., 1:].max() == 0                        # no white from the bands
    ref = F.interpolate(torch.from_numpy(frames[:, :, 40:280]).permute(0, 3, 1, 2).float(), size=(64, 64),
                        mode="bilinear", antialias=True, align_corners=False).permute(0, 2, 3, 1)
    assert (out.float() - ref).abs().max() <= 1.0
    col = out[0, :, 32, 0].float()
    assert torch.all(col[1:] >= col[:-1])                 # the ramp survives, top to bottom
    same = center_crop_resize(frames[:, :64, :64], 64)
    assert torch.equal(same, torch.from_numpy(frames[:, :64, :64]))


def test_to_clip_layout_range_and_flip():
    frames = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    clip = to_clip(frames)
    assert clip.shape == (3, 5, 8, 8) and clip.dtype == torch.float32
    assert clip.min() >= -1 and clip.max() <= 1
    assert torch.allclose(clip[:, 2], torch.from_numpy(frames[2]).permute(2, 0, 1).float() / 127.5 - 1)
    assert torch.equal(to_clip(frames, flip=True), clip.flip(-1))
    assert to_clip(np.zeros((1, 2, 2, 3), np.uint8)).min() == -1
    assert to_clip(np.full((1, 2, 2, 3), 255, np.uint8)).max() == 1
