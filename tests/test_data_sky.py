"""Sky Time-lapse loader: both folder depths, numeric frame order, splits, frames equal to the JPGs."""

import numpy as np
import pytest
import torch
from PIL import Image

from test_data_fixtures import data_config, sky_tree
from vfusion.data import DatasetError, build_dataset, dataset_info
from vfusion.data.clips import center_crop_resize, eval_position, to_clip
from vfusion.data.sky import list_sky
from vfusion.data.sources import natural_key


def test_natural_order_is_numeric():
    names = ["a_frames_10.jpg", "a_frames_2.jpg", "a_frames_1.jpg", "a_frames_11.jpg"]
    assert sorted(names) != sorted(names, key=natural_key)
    assert sorted(names, key=natural_key) == ["a_frames_1.jpg", "a_frames_2.jpg", "a_frames_10.jpg", "a_frames_11.jpg"]


def test_both_depths_and_splits(tmp_path_factory):
    root = sky_tree(tmp_path_factory)
    train = list_sky(root, "train")
    assert [it.key for it in train.items] == ["sky_train/clipA/clipA_1", "sky_train/clipA/clipA_2", "sky_train/flatB"]
    assert [it.key for it in list_sky(root, "test").items] == ["sky_test/clipC/clipC_1"]
    assert len(list_sky(root, "all").items) == 4
    assert list_sky(root.parent, "train").items == train.items      # the dataset one level down is found
    assert all(it.label == 0 for it in train.items) and train.class_names == ["sky"]
    for item in train.items:
        assert item.frames == tuple(f"{item.key.split('/')[-1]}_frames_{k}.jpg" for k in range(1, 13))


def test_frames_come_in_numeric_order_and_equal_the_images(tmp_path_factory, tmp_path):
    root = sky_tree(tmp_path_factory)
    cfg = data_config(dataset="sky", root=str(root), num_frames=4, frame_stride=2, resolution=32,
                      random_flip=False, cache_dir=str(tmp_path))
    ds = build_dataset(cfg, split="train", train=False, seed=1)
    assert len(ds) == 3
    for i, item in enumerate(ds.index.items):
        idx = ds.frame_indices(i, eval_position(1, i))
        raw = ds.reader.read(item, idx)
        blue = raw[..., 2].mean(axis=(1, 2))
        assert np.all(np.abs(blue - 18 * (idx + 1)) < 6), "frame k must be the file numbered k + 1"
        files = [np.asarray(Image.open(f"{item.path}/{item.key.split('/')[-1]}_frames_{k + 1}.jpg").convert("RGB"))
                 for k in idx]
        assert np.array_equal(raw, np.stack(files))
        video, label = ds[i]
        assert label == 0 and video.shape == (3, 4, 32, 32)
        assert torch.equal(video, to_clip(center_crop_resize(np.stack(files), 32)))
    info = dataset_info(cfg, "all")
    assert (info["videos"], info["frames"], info["num_classes"]) == (4, 48, 1)


def test_missing_split_folder_names_the_layout(tmp_path):
    (tmp_path / "sky_train" / "v" ).mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"sky_train/ folder holds no|holds no frame folders"):
        list_sky(tmp_path, "train")
    with pytest.raises(DatasetError, match=r"no sky_test/ folder.*mdgan"):
        list_sky(tmp_path, "test")
