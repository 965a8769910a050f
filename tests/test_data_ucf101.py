"""UCF-101 loader: layouts, labels, folds and splits, mixed case, corrupt/short/missing files,
and frames equal to a sequential decode."""

import re
import warnings

import numpy as np
import pytest
import torch

from test_data_fixtures import UCF_LENGTH, data_config, sequential_decode, ucf_tree
from vfusion.data import DatasetError, build_dataset, dataset_info
from vfusion.data.clips import center_crop_resize, to_clip
from vfusion.data.ucf101 import list_ucf101


def _listing(root, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list_ucf101(root, **kw)


@pytest.mark.parametrize("layout", ["side_by_side", "inside", "separate"])
def test_layouts_give_the_same_listing(tmp_path_factory, layout):
    root = ucf_tree(tmp_path_factory, layout)
    kw = {"splits_dir": root.parent / f"{layout}_lists" / "ucfTrainTestlist"} if layout == "separate" else {}
    listing = _listing(root, split="test", fold=1, **kw)
    assert listing.class_names == ["ApplyEyeMakeup", "HandstandPushups", "Basketball"]
    assert [it.label for it in listing.items] == [0, 1, 2]
    assert all(it.key.endswith("_g01_c01.avi") for it in listing.items)
    if layout == "inside":       # root may also be the class folder itself, splits inside it
        assert len(_listing(root / "UCF-101", split="test").items) == 3


def test_missing_splits_folder_says_how_to_fix(tmp_path_factory):
    root = ucf_tree(tmp_path_factory, "separate")
    with pytest.raises(DatasetError, match="data.splits_dir"):
        list_ucf101(root)


def test_missing_or_empty_root_names_the_layout_and_source(tmp_path):
    with pytest.raises(DatasetError, match=r"does not exist.*ucfTrainTestlist.*crcv.ucf.edu"):
        list_ucf101(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no UCF-101 class folders"):
        list_ucf101(tmp_path / "empty")


def test_folds_splits_labels_and_case_insensitive_matching(tmp_path_factory):
    root = ucf_tree(tmp_path_factory)
    for fold in (1, 2, 3):
        test = _listing(root, split="test", fold=fold)
        train = _listing(root, split="train", fold=fold)
        assert all(f"_g0{fold}_" in it.key for it in test.items)
        assert not any(f"_g0{fold}_" in it.key for it in train.items)
        # train list: 6 normal videos + short + corrupt present on disk; 1 listed but absent
        assert len(train.items) == 8 and train.missing == ["Basketball/v_Basketball_g06_c01.avi"]
        both = _listing(root, split="all", fold=fold)
        assert len(both.items) == 11
    # the list spells HandStandPushups / applyEyeMakeup, the folders HandstandPushups / ApplyEyeMakeup
    hs = [it for it in test.items if it.label == 1]
    assert hs and "HandstandPushups/v_HandstandPushups" in hs[0].path.replace("\\", "/")
    labels = {it.key.split("/")[0].lower(): it.label for it in both.items}
    assert labels == {"applyeyemakeup": 0, "handstandpushups": 1, "basketball": 2}


def test_missing_entry_is_an_error_when_strict(tmp_path_factory):
    root = ucf_tree(tmp_path_factory)
    with pytest.warns(UserWarning, match="1 video.*not in"):
        list_ucf101(root, split="train")
    with pytest.raises(DatasetError, match="data.strict"):
        list_ucf101(root, split="train", strict=True)


def test_corrupt_and_short_files_are_counted_never_a_crash(tmp_path_factory, tmp_path):
    root = ucf_tree(tmp_path_factory)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = dataset_info(data_config(dataset="ucf101", root=str(root), num_frames=4, frame_stride=3,
                                        short_policy="loop", cache_dir=str(tmp_path / "c1")))
    messages = [str(w.message) for w in caught]
    assert any(re.search(r"unreadable video .*v_Basketball_g04_c01\.avi", m) for m in messages)
    assert any("fewer than 10 frames" in m for m in messages)
    assert (info["videos"], info["unreadable"], info["short"], info["missing"], info["listed"]) == (7, 1, 1, 1, 9)
    assert info["num_classes"] == 3 and info["class_names"][1] == "HandstandPushups"
    assert info["frames"] == 6 * UCF_LENGTH + 6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        skip = dataset_info(data_config(dataset="ucf101", root=str(root), num_frames=4, frame_stride=3,
                                        short_policy="skip", cache_dir=str(tmp_path / "c2")))
    assert (skip["videos"], skip["skipped_short"]) == (6, 1)
    strict = data_config(dataset="ucf101", root=str(root), split="test", strict=True, num_frames=4,
                         cache_dir=str(tmp_path / "cache"))
    assert len(build_dataset(strict)) == 3                 # the test split has no bad file
    with pytest.raises(DatasetError, match=r"data.strict"):
        build_dataset(strict, split="train")              # the train list names an absent and a corrupt file
    from vfusion.data.index import build_index

    with pytest.raises(DatasetError, match=r"v_Basketball_g04_c01\.avi.*data.strict"):
        build_index(_listing(root, split="train"), 4, 3, "loop", strict=True)   # the corrupt file alone


def _dataset(root, split="train", train=False, **kw):
    cfg = dict(dataset="ucf101", root=str(root), num_frames=4, frame_stride=3, resolution=32,
               short_policy="loop", cache_dir=str(root.parent / "probe-cache"))
    cfg.update(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_dataset(data_config(**cfg), split=split, train=train, seed=3)


def test_frames_equal_a_sequential_decode_at_the_sampled_indices(tmp_path_factory):
    ds = _dataset(ucf_tree(tmp_path_factory))
    assert len(ds) == 7
    for i in range(len(ds)):
        item = ds.index.items[i]
        full = sequential_decode(item.path)                     # PyAV, in order, no seeking
        assert len(full) == ds.index.lengths[i]
        for u in (0.0, 0.37, 0.999):
            idx = ds.frame_indices(i, u)
            raw = ds.reader.read(item, idx)                     # decord, random access
            assert np.array_equal(raw, full[idx]), f"{item.key} frames {idx} differ from a sequential decode"
        video, label = ds[i]
        assert video.shape == (3, 4, 32, 32) and video.dtype == torch.float32
        assert -1 <= video.min() and video.max() <= 1
        assert label == item.label
        from vfusion.data.clips import eval_position
        expected = to_clip(center_crop_resize(full[ds.frame_indices(i, eval_position(3, i))], 32))
        assert torch.equal(video, expected)


def test_short_video_loops_or_lowers_its_stride(tmp_path_factory):
    root = ucf_tree(tmp_path_factory)
    for policy, check in (("loop", lambda idx: idx.max() < 6 and len(set(np.diff(idx) % 6)) == 1),
                          ("lower_stride", lambda idx: np.array_equal(np.diff(idx), [1, 1, 1]))):
        ds = _dataset(root, short_policy=policy)
        i = next(k for k, it in enumerate(ds.index.items) if "g05" in it.key)
        assert ds.index.lengths[i] == 6
        assert check(ds.frame_indices(i, 0.5)), policy
        assert ds[i][0].shape == (3, 4, 32, 32)


def test_training_draws_random_starts_and_flips_evaluation_is_fixed(tmp_path_factory):
    root = ucf_tree(tmp_path_factory)
    train = _dataset(root, train=True, random_flip=True)
    draws = {train._draw(0) for _ in range(40)}
    assert len({u for u, _ in draws}) > 20 and {f for _, f in draws} == {True, False}
    noflip = _dataset(root, train=True, random_flip=False)
    assert not any(noflip._draw(0)[1] for _ in range(40))
    ev = _dataset(root, train=False, random_flip=True)
    assert torch.equal(ev[2][0], ev[2][0])
    assert ev._draw(2) == ev._draw(2) and ev._draw(2)[1] is False
    assert _dataset(root, class_conditional=False)[5][1] == 0


def test_a_file_that_breaks_after_indexing_is_skipped_with_a_warning(tmp_path_factory, tmp_path):
    import shutil

    src = ucf_tree(tmp_path_factory)
    root = tmp_path / "copy"
    shutil.copytree(src, root)
    ds = _dataset(root, split="test")
    strict = _dataset(root, split="test", strict=True)
    broken = ds.index.items[1].path
    with open(broken, "r+b") as f:                # keep the size, destroy the content
        f.write(b"\0" * 4096)
    with pytest.warns(UserWarning, match=r"skipping undecodable video .*HandstandPushups_g01"):
        video, label = ds[1]
    assert label == ds.index.items[2].label       # the next video stands in
    assert ds.decode_failures and "HandstandPushups_g01" in ds.decode_failures[0]
    with pytest.raises(DatasetError, match=r"cannot decode .*HandstandPushups_g01.*data.strict"):
        strict[1]
