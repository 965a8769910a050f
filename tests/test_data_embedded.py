"""The embedded procedural dataset: deterministic, temporally structured, classes distinguishable,
written in the UCF-101 layout (regenerated when its parameters change) and read by the UCF-101 loader."""

import json
import time

import numpy as np
import pytest
import torch

from test_data_fixtures import data_config, sequential_decode
from vfusion.data import DatasetError, build_dataset, dataset_info
from vfusion.data.embedded import CLASSES, class_names, ensure_embedded, render_clip


def test_render_is_a_pure_function_of_the_seed():
    a = render_clip("BouncingBall", seed=0, clip=3, size=32, length=12)
    assert a.shape == (12, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render_clip("BouncingBall", seed=0, clip=3, size=32, length=12))
    assert not np.array_equal(a, render_clip("BouncingBall", seed=1, clip=3, size=32, length=12))
    assert not np.array_equal(a, render_clip("BouncingBall", seed=0, clip=4, size=32, length=12))
    # the first frames do not depend on the length asked for
    assert np.array_equal(a[:6], render_clip("BouncingBall", seed=0, clip=3, size=32, length=6))


def test_every_class_moves_smoothly():
    for name in CLASSES:
        v = render_clip(name, 0, 0, size=64, length=24).astype(np.float32)
        other = render_clip(name, 0, 1, size=64, length=24).astype(np.float32)
        step = np.abs(np.diff(v, axis=0)).mean()
        assert step > 1.0, f"{name} does not move"
        assert step < 0.5 * np.abs(v - other).mean(), f"{name}: consecutive frames differ like unrelated clips"
        assert np.abs(np.diff(v, axis=2)).mean() < 6, f"{name} is not smooth in space"


def _features(v):
    v = v.astype(np.float32) / 255
    t, h, w, _ = v.shape
    appearance = v.mean(0).reshape(8, h // 8, 8, w // 8, 3).mean((1, 3)).ravel()
    motion = np.abs(np.diff(v.mean(-1), axis=0)).mean(0).reshape(8, h // 8, 8, w // 8).mean((1, 3)).ravel()
    return appearance, motion


def test_classes_are_distinguishable_by_a_nearest_centroid_classifier():
    names = class_names(len(CLASSES))
    train = [(c, _features(render_clip(n, 0, j, 32, 16))) for c, n in enumerate(names) for j in range(10)]
    test = [(c, _features(render_clip(n, 0, 100 + j, 32, 16))) for c, n in enumerate(names) for j in range(10)]

    def accuracy(pick):
        x = np.array([pick(f) for _, f in train]); y = np.array([c for c, _ in train])
        cent = np.stack([x[y == c].mean(0) for c in range(len(names))])
        xt = np.array([pick(f) for _, f in test]); yt = np.array([c for c, _ in test])
        return (np.argmin(((xt[:, None] - cent[None]) ** 2).sum(-1), 1) == yt).mean()

    assert accuracy(lambda f: np.concatenate(f)) >= 0.9
    assert accuracy(lambda f: f[1]) >= 0.5            # motion alone, 8 classes (chance 0.125)


def _small(root, cache_dir, **kw):
    cfg = dict(dataset="embedded", root=str(root), cache_dir=str(cache_dir), embedded_num_classes=3,
               embedded_train_per_class=5, embedded_test_per_class=2, embedded_size=32, embedded_length=10,
               num_frames=4, resolution=16)
    cfg.update(kw)
    return data_config(**cfg)


def test_written_in_the_ucf101_layout_and_read_by_its_loader(tmp_path):
    cfg = _small(tmp_path / "emb", tmp_path / "cache")
    root = ensure_embedded(cfg, progress=False)
    lists = root / "ucfTrainTestlist"
    assert (lists / "classInd.txt").read_text() == "1 BouncingBall\n2 SwingingPendulum\n3 DriftingClouds\n"
    for fold in (1, 2, 3):
        test = (lists / f"testlist0{fold}.txt").read_text().split()
        train = [line.split()[0] for line in (lists / f"trainlist0{fold}.txt").read_text().splitlines()]
        assert len(test) == 6 and len(train) == 15 and not set(test) & set(train)
    assert "BouncingBall/v_BouncingBall_g01_c01.avi" in (lists / "testlist01.txt").read_text()
    info = dataset_info(cfg, "train")
    assert info["class_names"] == ["BouncingBall", "SwingingPendulum", "DriftingClouds"]
    assert (info["videos"], info["frames"], info["unreadable"]) == (15, 150, 0)
    ds = build_dataset(cfg, split="test", train=False)
    assert len(ds) == 6 and sorted({ds[i][1] for i in range(6)}) == [0, 1, 2]
    video, _ = ds[0]
    assert video.shape == (3, 4, 16, 16)
    # XviD is lossy, but the decoded file is the rendered clip
    item = ds.index.items[0]
    decoded = sequential_decode(item.path).astype(np.float32)
    assert item.key == "BouncingBall/v_BouncingBall_g01_c01.avi"
    assert np.abs(decoded - render_clip("BouncingBall", 0, 0, 32, 10)).mean() < 5


def test_marker_decides_regeneration_and_foreign_folders_are_left_alone(tmp_path):
    cfg = _small(tmp_path / "emb", tmp_path / "cache")
    root = ensure_embedded(cfg, progress=False)
    some = root / "UCF-101" / "BouncingBall" / "v_BouncingBall_g01_c01.avi"
    stamp = some.stat().st_mtime_ns
    assert ensure_embedded(cfg, progress=False) == root and some.stat().st_mtime_ns == stamp
    ensure_embedded(_small(tmp_path / "emb", tmp_path / "cache", embedded_seed=7), progress=False)
    assert json.loads((root / "embedded.json").read_text())["seed"] == 7
    assert some.read_bytes() != b"" and some.stat().st_mtime_ns != stamp
    assert not list(tmp_path.glob(".emb.*"))                     # no temporary folders left behind
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("x")
    with pytest.raises(DatasetError, match="not an embedded dataset"):
        ensure_embedded(_small(tmp_path / "mine", tmp_path / "cache"), progress=False)
    with pytest.raises(DatasetError, match="embedded_num_classes"):
        ensure_embedded(_small(tmp_path / "x", tmp_path / "cache", embedded_num_classes=99), progress=False)


def test_a_size_decord_reads_back_wrongly_is_refused_before_writing(tmp_path):
    """decord 0.6 returns 48x48 XviD frames with 4 channels (a bug of its own); such a dataset would fail
    at every read, so generating it is refused up front with a size that does read back."""
    with pytest.raises(DatasetError, match=r"data.embedded_size is 48.*e\.g\. \d+"):
        ensure_embedded(_small(tmp_path / "emb", tmp_path / "cache", embedded_size=48), progress=False)
    assert not (tmp_path / "emb").exists() and not list(tmp_path.glob(".emb.*"))


@pytest.mark.slow
def test_default_generation_is_fast(tmp_path):
    start = time.perf_counter()
    ensure_embedded(data_config(root=str(tmp_path / "emb")), progress=False)
    assert time.perf_counter() - start < 30
    assert len(list((tmp_path / "emb" / "UCF-101").glob("*/*.avi"))) == 4 * (64 + 16)
