"""The user-supplied C3D for ``is_ucf_c3d``: loading state-dict files, the protocol's
preprocessing, and the errors for files that are absent, partial or not a state dict."""

from __future__ import annotations

import pytest
import torch

from vfusion.evaluation.c3d import C3D, c3d_preprocess, load_c3d
from vfusion.evaluation.weights import WeightsError, file_sha256


@pytest.fixture(scope="module")
def c3d_file(tmp_path_factory):
    torch.manual_seed(0)
    net = C3D(101)
    path = tmp_path_factory.mktemp("c3d") / "c3d_ucf101.pth"
    state = {k: v.half() for k, v in net.state_dict().items() if k != "input_mean"}  # half: a smaller file
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, path)
    return path, state


def test_c3d_loads_a_state_dict_and_classifies_preprocessed_clips(c3d_file):
    path, state = c3d_file
    model = load_c3d(path)
    assert not model.training
    assert model.detector_info["sha256"] == file_sha256(path)
    for key, value in state.items():
        assert torch.equal(model.net.state_dict()[key], value.float()), key
    torch.manual_seed(1)
    clips = torch.rand(1, 3, 16, 120, 160) * 2 - 1
    logits = model(clips)
    assert logits.shape == (1, 101)
    torch.testing.assert_close(logits, model.net(c3d_preprocess(clips, model.net.input_mean)))


def test_c3d_preprocess_resizes_crops_and_goes_bgr_minus_mean():
    clip = torch.empty(1, 3, 16, 64, 96)
    clip[:, 0], clip[:, 1], clip[:, 2] = 1.0, 0.0, -1.0  # RGB = 255, 127.5, 0
    clip[..., :16] = -1.0  # a black band on the left that the center crop must cut away
    mean = torch.tensor([10.0, 20.0, 30.0]).view(3, 1, 1, 1)
    x = c3d_preprocess(clip, mean)
    assert x.shape == (1, 3, 16, 112, 112)
    # short side 64 -> 128, long side 96 -> 192; crop columns 40..152 of 192 skip the band (0..32)
    torch.testing.assert_close(x[0, :, 0, 56, 56], torch.tensor([0.0 - 10, 127.5 - 20, 255.0 - 30]))
    torch.testing.assert_close(x.amax((2, 3, 4)), x.amin((2, 3, 4)))
    with pytest.raises(ValueError, match="16 frames"):
        c3d_preprocess(torch.zeros(1, 3, 15, 112, 112), mean)


def test_c3d_loader_errors(tmp_path, c3d_file):
    _, state = c3d_file
    with pytest.raises(WeightsError, match="cannot be downloaded"):
        load_c3d(tmp_path / "absent.pth")
    partial = dict(state)
    del partial["fc7.weight"]
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(WeightsError, match=r"missing \['fc7.weight'\]"):
        load_c3d(tmp_path / "partial.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(WeightsError, match="not a torch state-dict file"):
        load_c3d(tmp_path / "junk.pth")
