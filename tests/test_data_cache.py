"""Caches: uint8 clip shards equal direct decoding, latents equal direct encoding, config-keyed
invalidation; LatentCodec round trip shapes and determinism."""

import json
import warnings

import numpy as np
import pytest
import torch

from test_data_fixtures import data_config, ucf_tree
from vfusion.data import DatasetError, build_dataset, ensure_cache
from vfusion.data.clips import cache_positions, to_clip


def _cfg(root, cache_dir, **kw):
    base = dict(dataset="ucf101", root=str(root), num_frames=4, frame_stride=3, resolution=32, short_policy="loop",
                cache="clips", cache_dir=str(cache_dir), num_workers=0)
    base.update(kw)
    return data_config(**base)


def _quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)


def test_clip_cache_equals_direct_decoding_and_is_reused(tmp_path_factory, tmp_path):
    root = ucf_tree(tmp_path_factory)
    cfg = _cfg(root, tmp_path, cache_clips_per_video=2)
    path = _quiet(ensure_cache, cfg, "train", progress=False)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["counts"]["videos"] == 7 and manifest["counts"]["unreadable"] == 1
    cached = _quiet(build_dataset, cfg, "train", train=False)
    direct = _quiet(build_dataset, _cfg(root, tmp_path, cache="none"), "train", train=False)
    assert len(cached) == len(direct) == 7
    assert cached.class_names == direct.class_names
    for i in range(len(direct)):
        stored = cached.item(i)                                    # (K, T, R, R, 3) uint8
        assert stored.shape == (2, 4, 32, 32, 3) and stored.dtype == np.uint8
        for k, u in enumerate(cache_positions(2)):
            assert np.array_equal(stored[k], direct.read_clip(i, direct.frame_indices(i, u)).numpy())
        video, label = cached[i]
        assert label == direct.index.items[i].label
        assert any(torch.equal(video, to_clip(np.array(stored[k]))) for k in range(2))
    # a second call finds the same folder, no rebuild
    mtime = (path / "manifest.json").stat().st_mtime_ns
    assert _quiet(ensure_cache, cfg, "train", progress=False) == path
    assert (path / "manifest.json").stat().st_mtime_ns == mtime


def test_cache_key_follows_the_config(tmp_path_factory, tmp_path):
    root = ucf_tree(tmp_path_factory)
    a = _quiet(ensure_cache, _cfg(root, tmp_path), "test", progress=False)
    b = _quiet(ensure_cache, _cfg(root, tmp_path, resolution=16), "test", progress=False)
    c = _quiet(ensure_cache, _cfg(root, tmp_path, frame_stride=2), "test", progress=False)
    assert len({a, b, c}) == 3
    assert np.load(b / "shard_00000.npy", mmap_mode="r").shape[1:] == (1, 4, 16, 16, 3)
    # flips and labels are applied when reading: same cache
    assert _quiet(ensure_cache, _cfg(root, tmp_path, random_flip=False, class_conditional=False), "test",
                  progress=False) == a


def test_cached_training_flips_and_unconditional_labels(tmp_path_factory, tmp_path):
    root = ucf_tree(tmp_path_factory)
    ds = _quiet(build_dataset, _cfg(root, tmp_path, class_conditional=False), "test", train=True, seed=0)
    stored = to_clip(np.array(ds.item(1)[0]))
    seen = set()
    for _ in range(30):
        video, label = ds[1]
        assert label == 0
        seen.add("flip" if torch.equal(video, stored.flip(-1)) else "plain" if torch.equal(video, stored) else "?")
    assert seen == {"flip", "plain"}


def _tiny_vae(path):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                        latent_channels=4, norm_num_groups=4, sample_size=32)
    vae.save_pretrained(path)
    return vae


def test_latent_codec_shapes_scaling_and_determinism(tmp_path):
    from vfusion.data.latents import LatentCodec

    vae = _tiny_vae(tmp_path / "vae")
    codec = LatentCodec(tmp_path / "vae")
    assert codec.scaling_factor == pytest.approx(0.18215) and codec.downsample == 2
    video = torch.rand(2, 3, 5, 16, 16) * 2 - 1
    z = codec.encode(video)
    assert z.shape == (2, 4, 5, 8, 8) == (2, *codec.latent_shape(5, 16))
    assert torch.equal(z, codec.encode(video))                        # posterior mode: deterministic
    frame = video[1, :, 3][None]                                      # clip 1, frame 3 through the raw VAE
    ref = vae.encode(frame).latent_dist.mean * vae.config.scaling_factor
    assert torch.allclose(z[1, :, 3], ref[0], atol=1e-5)
    x = codec.decode(z)
    assert x.shape == video.shape and x.min() >= -1 and x.max() <= 1
    ref_dec = vae.decode(ref / vae.config.scaling_factor).sample.clamp(-1, 1)
    assert torch.allclose(x[1, :, 3], ref_dec[0], atol=1e-5)
    assert LatentCodec(tmp_path / "vae", scaling_factor=1.0).encode(video).abs().mean() > z.abs().mean()
    (tmp_path / "not_a_vae").mkdir()
    with pytest.raises(DatasetError, match="save_pretrained"):
        LatentCodec(tmp_path / "not_a_vae")


def test_latent_cache_equals_direct_encoding(tmp_path_factory, tmp_path):
    from vfusion.data.latents import LatentCodec

    root = ucf_tree(tmp_path_factory)
    _tiny_vae(tmp_path / "pipe" / "vae")                             # a pipeline folder: vae/ is found
    cfg = _cfg(root, tmp_path, cache="latents", vae_path=str(tmp_path / "pipe"), random_flip=True)
    ds = _quiet(build_dataset, cfg, "test", train=False)
    direct = _quiet(build_dataset, _cfg(root, tmp_path, cache="none"), "test", train=False)
    codec = LatentCodec(tmp_path / "pipe")
    assert len(ds) == 3
    for i in range(3):
        frames = direct.read_clip(i, direct.frame_indices(i, cache_positions(1)[0]))
        want = codec.encode(torch.stack([to_clip(frames), to_clip(frames, flip=True)]))
        stored = torch.from_numpy(np.array(ds.item(i)))              # (K=1, F=2, c, T, h, w)
        assert stored.shape == (1, 2, 4, 4, 16, 16)
        assert torch.allclose(stored[0], want, atol=1e-5)
        latents, label = ds[i]
        assert torch.equal(latents, stored[0, 0]) and label == direct.index.items[i].label
    train = _quiet(build_dataset, cfg, "test", train=True)
    picks = {int(torch.equal(train[0][0], torch.from_numpy(np.array(train.item(0)[0, 1])))) for _ in range(30)}
    assert picks == {0, 1}                                            # training draws the flipped latents too
