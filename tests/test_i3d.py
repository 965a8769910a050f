"""Inception-I3D port: TF "SAME" padding, scaleless BN, the safe Flax loader, FVD features,
the TorchScript alternative, and the protocol's real check on cricket_rgb.gif."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vfusion.evaluation.i3d import (InceptionI3D, MaxPoolSame, TorchScriptI3D, Unit3D, i3d_features, load_flax_weights,
                                    load_i3d, read_flax_checkpoint, same_padding)
from vfusion.evaluation.weights import WeightsError, file_sha256


# --------------------------------------------------------------------------- layers

@pytest.mark.parametrize("size,kernel,stride,expected", [
    (224, 7, 2, (2, 3)),   # out 112: total 5, odd cell after
    (16, 7, 2, (2, 3)),
    (112, 3, 2, (0, 1)),   # out 56: total 1, all after
    (8, 2, 2, (0, 0)),
    (9, 2, 2, (0, 1)),
    (28, 3, 1, (1, 1)),
    (5, 1, 1, (0, 0)),
])
def test_same_padding_follows_tensorflow(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


def test_strided_unit3d_pads_the_extra_cell_after():
    torch.manual_seed(0)
    unit = Unit3D(2, 3, (3, 3, 3), (2, 2, 2), batch_norm=False, relu=False)
    x = torch.randn(1, 2, 6, 8, 8)
    out = unit(x)
    assert out.shape == (1, 3, 3, 4, 4)  # ceil(size / 2)
    # total padding 1 per axis: TF puts it after (right/bottom/later frame)
    ref = F.conv3d(F.pad(x, (0, 1, 0, 1, 0, 1)), unit.conv.weight, None, 2)
    wrong = F.conv3d(F.pad(x, (1, 0, 1, 0, 1, 0)), unit.conv.weight, None, 2)
    torch.testing.assert_close(out, ref)
    assert not torch.allclose(out, wrong)


def test_unit3d_folded_batchnorm_has_no_scale_and_eps_1e3():
    torch.manual_seed(1)
    unit = Unit3D(3, 4, (3, 3, 3))
    with torch.no_grad():
        unit.bn.bias.normal_()
        unit.bn.running_mean.normal_()
        unit.bn.running_var.uniform_(0.001, 0.01)  # small var: eps matters
    x = torch.randn(2, 3, 5, 7, 7)
    conv = F.conv3d(x, unit.conv.weight, None, 1, 1)
    shape = (1, -1, 1, 1, 1)
    ref = (conv - unit.bn.running_mean.view(shape)) / torch.sqrt(unit.bn.running_var.view(shape) + 1e-3)
    ref = F.relu(ref + unit.bn.bias.view(shape))
    torch.testing.assert_close(unit(x), ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(F.relu(unit.bn(conv)), ref, rtol=1e-4, atol=1e-4)


def test_maxpool_same_padding_never_wins():
    x = -1 - torch.rand(1, 1, 1, 5, 5)  # all negative: zero padding would leak 0 into the edge windows
    out = MaxPoolSame((1, 3, 3), (1, 2, 2))(x)
    assert out.shape == (1, 1, 1, 3, 3)
    assert out.max() < -1
    # window of the last output cell covers rows/cols 4..5 (5 is padding)
    assert out[0, 0, 0, 2, 2] == x[0, 0, 0, 4, 4]


def test_i3d_shapes_and_input_errors():
    torch.manual_seed(0)
    model = InceptionI3D().eval()
    with torch.no_grad():
        per_step = model.logits_per_step(torch.zeros(1, 3, 16, 224, 224))
        out = model(torch.zeros(1, 3, 9, 224, 224))
    assert per_step.shape == (1, 400, 1)  # 16 -> 8 -> 4 -> 2 steps, VALID pool of 2 -> 1
    assert out.shape == (1, 400)
    with pytest.raises(ValueError, match="at least 9 frames"):
        model(torch.zeros(1, 3, 8, 224, 224))
    with pytest.raises(ValueError, match="i3d_features"):
        model(torch.zeros(1, 3, 16, 112, 112))


# --------------------------------------------------------------------------- the Flax pickle

def to_flax_tree(model: InceptionI3D) -> dict:
    """The inverse of the loader's mapping, to build synthetic checkpoints."""
    tree = {"params": {}, "batch_stats": {}}
    for key, value in model.state_dict().items():
        *module, layer, leaf = key.split(".")
        path = "/".join(module).split("/")
        arr = value.numpy().astype(np.float32)
        if (layer, leaf) == ("conv", "weight"):
            top, mod, name, arr = "params", "Conv_0", "kernel", arr.transpose(2, 3, 4, 1, 0)
        elif (layer, leaf) == ("conv", "bias"):
            top, mod, name = "params", "Conv_0", "bias"
        elif (layer, leaf) == ("bn", "bias"):
            top, mod, name = "params", "BatchNorm_0", "bias"
        else:
            top, mod, name = "batch_stats", "BatchNorm_0", {"running_mean": "mean", "running_var": "var"}[leaf]
            arr = arr.reshape(1, 1, 1, 1, -1)
        node = tree[top]
        for part in path + [mod]:
            node = node.setdefault(part, {})
        node[name] = np.ascontiguousarray(arr)
    return tree


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    torch.manual_seed(3)
    model = InceptionI3D()
    with torch.no_grad():
        for name, buf in model.named_buffers():
            buf.uniform_(0.5, 1.5) if name.endswith("running_var") else buf.normal_()
        for p in model.parameters():
            p.normal_()
    path = tmp_path_factory.mktemp("ckpt") / "random.ckpt"
    tree = to_flax_tree(model)
    path.write_bytes(pickle.dumps(tree, protocol=4))
    return model, tree, path


def test_flax_loader_fills_every_entry_with_transposed_kernels(random_checkpoint):
    source, tree, path = random_checkpoint
    assert tree["params"]["Mixed_3b"]["Branch_1"]["Conv3d_0b_3x3"]["Conv_0"]["kernel"].shape == (3, 3, 3, 96, 128)
    loaded = load_flax_weights(InceptionI3D(), path)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0, msg=key)
    kernel = tree["params"]["Conv3d_1a_7x7"]["Conv_0"]["kernel"]  # (T, H, W, Cin, Cout)
    assert loaded.Conv3d_1a_7x7.conv.weight[5, 2, 1, 3, 4] == float(kernel[1, 3, 4, 2, 5])


def test_flax_loader_rejects_missing_and_extra_arrays(tmp_path, random_checkpoint):
    _, tree, _ = random_checkpoint
    missing = pickle.loads(pickle.dumps(tree))
    del missing["params"]["Mixed_4c"]["Branch_2"]["Conv3d_0b_3x3"]["BatchNorm_0"]["bias"]
    (tmp_path / "missing.ckpt").write_bytes(pickle.dumps(missing))
    with pytest.raises(WeightsError, match=r"1 model entries not filled.*Mixed_4c\.Branch_2\.Conv3d_0b_3x3\.bn\.bias"):
        load_flax_weights(InceptionI3D(), tmp_path / "missing.ckpt")
    extra = pickle.loads(pickle.dumps(tree))
    extra["params"]["Mixed_9z"] = {"Conv_0": {"kernel": np.zeros((1, 1, 1, 2, 2), np.float32)}}
    (tmp_path / "extra.ckpt").write_bytes(pickle.dumps(extra))
    with pytest.raises(WeightsError, match=r"1 file arrays unused.*Mixed_9z"):
        load_flax_weights(InceptionI3D(), tmp_path / "extra.ckpt")


class Boom:
    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


def test_unpickler_refuses_non_numpy_globals(tmp_path):
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"params": {"x": Boom()}, "batch_stats": {}}))
    with pytest.raises(WeightsError, match=r"refusing to load global (posix|os|nt)\.system"):
        read_flax_checkpoint(path)


def test_truncated_wrong_and_misshaped_files_give_clear_errors(tmp_path, random_checkpoint):
    _, _, path = random_checkpoint
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(WeightsError, match="truncated or not an I3D pickle"):
        read_flax_checkpoint(truncated)
    torch_file = tmp_path / "torch.ckpt"
    torch.save({"a": torch.zeros(2)}, torch_file)  # a zip archive, not a pickle stream
    with pytest.raises(WeightsError, match="vfusion weights fetch"):
        read_flax_checkpoint(torch_file)
    other = tmp_path / "other.ckpt"
    other.write_bytes(pickle.dumps({"params": {}}))
    with pytest.raises(WeightsError, match="top keys params and batch_stats"):
        read_flax_checkpoint(other)
    with pytest.raises(WeightsError, match="does not exist"):
        load_i3d(path=tmp_path / "absent.ckpt")


# --------------------------------------------------------------------------- FVD features

class Recorder(nn.Module):
    def forward(self, x):
        self.seen = x.clone()
        return x.mean((2, 3, 4)).repeat(1, 134)[:, :400]


def test_i3d_features_resizes_quantizes_and_returns_float64():
    torch.manual_seed(0)
    clips = torch.rand(2, 3, 10, 64, 80) * 2.2 - 1.1  # slightly out of range: clamped
    rec = Recorder()
    feats = i3d_features(rec, clips)
    assert feats.dtype == torch.float64 and feats.shape == (2, 400)
    assert rec.seen.shape == (2, 3, 10, 224, 224)
    q = torch.round((clips.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1
    frames = q.permute(0, 2, 1, 3, 4).reshape(20, 3, 64, 80)
    ref = F.interpolate(frames, size=(224, 224), mode="bilinear", align_corners=False)
    torch.testing.assert_close(rec.seen, ref.reshape(2, 10, 3, 224, 224).permute(0, 2, 1, 3, 4))
    gray = i3d_features(rec, clips[:, :1])
    assert torch.equal(rec.seen[:, 0], rec.seen[:, 2])
    assert gray.shape == (2, 400)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        i3d_features(rec, clips * 127.5 + 127.5)


class FakeStyleGANVI3D(nn.Module):
    """Stands in for StyleGAN-V's i3d_torchscript.pt (same call signature)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 400)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        if rescale or resize or not return_features:
            return torch.zeros(1)
        return self.proj(x.mean((2, 3, 4)))


def test_torchscript_i3d_is_called_with_the_stylegan_v_flags(tmp_path):
    torch.manual_seed(0)
    fake = FakeStyleGANVI3D()
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(fake), str(path))
    model = load_i3d(path=path)
    assert isinstance(model, TorchScriptI3D) and not model.training
    assert model.detector_info["sha256"] == file_sha256(path)
    assert model.detector_info["name"] == "i3d_torchscript"
    clip = torch.rand(2, 3, 16, 224, 224) * 2 - 1
    torch.testing.assert_close(model(clip), fake(clip, return_features=True))
    torch.testing.assert_close(i3d_features(model, clip[:, :, :, :112, :112]).shape, torch.Size([2, 400]))
    with pytest.raises(ValueError, match="i3d_features"):
        model(clip[:, :, :, :100])
    bad = tmp_path / "not_script.pt"
    torch.save({"w": torch.zeros(1)}, bad)
    with pytest.raises(WeightsError, match="not a TorchScript file"):
        load_i3d(path=bad)


# --------------------------------------------------------------------------- the real check

def test_cricket_clip_is_playing_cricket(weights_cache, reference_dir):
    """protocols.md: cricket_rgb.gif, scaled to [-1, 1] and fed whole -> 'playing cricket' ~0.99."""
    from vfusion.utils.video import read_video

    labels = (reference_dir / "label_map.txt").read_text().splitlines()
    assert len(labels) == 400
    clip = read_video(reference_dir / "cricket_rgb.gif")
    assert clip.shape == (3, 79, 224, 224)
    model = load_i3d(weights_cache)
    assert model.detector_info["sha256"] == "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
    with torch.no_grad():
        logits = model(clip[None])
    probs = torch.softmax(logits[0], 0)
    assert labels[int(probs.argmax())] == "playing cricket"
    assert float(probs.max()) > 0.9
    # the FVD path gives the same logits on uint8-valued 224x224 frames (checked on 9 frames: cheaper)
    short = clip[None, :, :9]
    with torch.no_grad():
        direct = model(short)
    torch.testing.assert_close(i3d_features(model, short).float(), direct, rtol=1e-4, atol=1e-3)
