"""build_dataloader: batches in the project layout, worker-safe seeding (reproducible from the seed,
different per worker), deterministic evaluation."""

import warnings

import torch

from test_data_fixtures import data_config, ucf_tree
from vfusion.data import build_dataloader, build_dataset


def _cfg(root, cache_dir, **kw):
    base = dict(dataset="ucf101", root=str(root), num_frames=4, frame_stride=3, resolution=16, short_policy="loop",
                cache_dir=str(cache_dir), batch_size=7, num_workers=2, split="train")
    base.update(kw)
    return data_config(**base)


def _batches(loader, epochs=1):
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(epochs):
            out += [(v.clone(), y.clone()) for v, y in loader]
    return out


def test_training_loader_is_reproducible_and_workers_draw_differently(tmp_path_factory, tmp_path):
    root = ucf_tree(tmp_path_factory)
    cfg = _cfg(root, tmp_path, batch_size=1, random_flip=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = _batches(build_dataloader(cfg, train=True, seed=5, shuffle=False), epochs=2)
        b = _batches(build_dataloader(cfg, train=True, seed=5, shuffle=False), epochs=2)
        c = _batches(build_dataloader(cfg, train=True, seed=6, shuffle=False), epochs=2)
    assert len(a) == 14 and a[0][0].shape == (1, 3, 4, 16, 16) and a[0][0].dtype == torch.float32
    assert all(torch.equal(x[0], y[0]) for x, y in zip(a, b))            # same seed, same clips
    assert not all(torch.equal(x[0], y[0]) for x, y in zip(a, c))        # another seed, other clips
    # epoch 2 (persistent workers) does not repeat epoch 1's starts
    assert not all(torch.equal(x[0], y[0]) for x, y in zip(a[:7], a[7:]))


def test_evaluation_loader_is_deterministic_and_matches_the_dataset(tmp_path_factory, tmp_path):
    root = ucf_tree(tmp_path_factory)
    cfg = _cfg(root, tmp_path, split="test")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loader = build_dataloader(cfg, train=False, seed=2)
        ds = build_dataset(cfg, train=False, seed=2)
    (video, label), = _batches(loader)
    assert video.shape == (3, 3, 4, 16, 16) and label.tolist() == [0, 1, 2]
    assert torch.equal(video, torch.stack([ds[i][0] for i in range(3)]))
    assert loader.num_workers == 2 and loader.persistent_workers
    assert build_dataloader(_cfg(root, tmp_path, split="test", num_workers=0), train=False).num_workers == 0
