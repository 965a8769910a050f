"""Offline text-to-video: the embedded clips' captions say what their pixels do, the random CLIP text encoder
is seeded and frozen, a fresh base becomes a cross-attention UNet conditioned on it, and the whole main job
(stage 1 -> stage 2 -> evaluation from the real captions) runs and hands the encoder from stage to stage."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from test_data_fixtures import data_config
from tests.conftest import ROOT
from vfusion.data import build_listing
from vfusion.data.embedded import CLASSES, clip_caption, render_clip

TEXT_CONFIG = str(ROOT / "configs" / "embedded_text.yaml")


def test_captioning_leaves_the_pixels_as_they_were():
    # digest of these clips rendered by the generator before it returned captions: same draws, same clips
    digests = [hashlib.md5(render_clip(n, 0, j, 32, 16).tobytes()).hexdigest() for n in CLASSES for j in range(3)]
    assert hashlib.sha256("".join(digests).encode()).hexdigest() == \
        "303682e690b7248cd0fa78feb340234c631111a802f24df8dc7adf7fdbc11dee"


def _centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def test_ball_captions_give_the_direction_the_ball_travels():
    checked = 0
    for clip in range(24):
        v = render_clip("BouncingBall", 0, clip, size=64, length=2).astype(np.float32) / 255
        red = (v[..., 0] > 0.6) & (v[..., 1] < 0.35)
        a, b = _centroid(red[0]), _centroid(red[1])
        if min(a[0], 64 - a[0]) < 14:  # near a wall: it may bounce within the first step
            continue
        right = b[0] > a[0]
        assert ("to the right" in clip_caption("BouncingBall", 0, clip)) == right, clip
        checked += 1
    assert checked >= 12


def test_cloud_captions_give_the_wind_direction():
    for clip in range(8):
        v = render_clip("DriftingClouds", 0, clip, size=64, length=9).astype(np.float32).mean(-1)
        # the sky is a vertical gradient and clouds wrap around: frame 8 is frame 0 shifted along x
        errors = [np.abs(np.roll(v[0], s, axis=1) - v[8]).mean() for s in range(-20, 21)]
        shift = int(np.argmin(errors)) - 20
        assert shift != 0
        assert ("to the right" in clip_caption("DriftingClouds", 0, clip)) == (shift > 0), clip


def test_moon_captions_give_the_sense_of_its_orbit():
    for clip in range(8):
        v = render_clip("OrbitingMoon", 0, clip, size=64, length=3).astype(np.float32) / 255
        planet = _centroid((v[0, ..., 0] > 0.7) & (v[0, ..., 2] < 0.4))
        angles = [np.arctan2(*(_centroid((f[..., 2] > 0.7) & (f[..., 0] > 0.7)) - planet)[::-1]) for f in v]
        turn = np.angle(np.exp(1j * (angles[2] - angles[0])))
        # image y grows downwards, so a growing angle turns clockwise on the screen
        assert clip_caption("OrbitingMoon", 0, clip).endswith(" clockwise") == (turn > 0), clip


def test_embedded_text_lists_the_embedded_clips_with_their_captions(tmp_path):
    kw = dict(root=str(tmp_path / "emb"), cache_dir=str(tmp_path / "cache"), embedded_num_classes=2,
              embedded_train_per_class=3, embedded_test_per_class=1, embedded_size=32, embedded_length=6,
              num_frames=4, resolution=16)
    plain = build_listing(data_config(dataset="embedded", **kw), "train")
    text = build_listing(data_config(dataset="embedded_text", **kw), "train")
    assert [i.key for i in text.items] == [i.key for i in plain.items] and text.captioned
    assert text.class_names == ["video"] and text.dataset == "embedded_text"
    names = list(CLASSES)
    for item in text.items:
        name, file = item.key.split("/")
        group, number = file[:-4].split("_")[-2:]
        clip = (int(group[1:]) - 1) * 4 + int(number[1:]) - 1
        assert item.caption == clip_caption(name, 0, clip, names.index(name))


def test_data_check_counts_the_captions_and_writes_nothing(tmp_path, capsys):
    from vfusion.cli import main
    from vfusion.data.embedded import ensure_embedded

    root = tmp_path / "emb"
    assert main(["data", "check", "--dataset", "embedded_text", "--root", str(root)]) == 1  # nothing there yet
    assert "no embedded.json" in capsys.readouterr().err and not root.exists()
    ensure_embedded(data_config(dataset="embedded", root=str(root), embedded_num_classes=2,
                                embedded_train_per_class=3, embedded_test_per_class=1, embedded_size=32,
                                embedded_length=10), progress=False)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert main(["data", "check", "--dataset", "embedded_text", "--root", str(root), "--num-frames", "4"]) == 0
    out = capsys.readouterr().out
    assert "captions     6 (0 missing, 0 empty" in out  # the 6 training clips, each with its caption
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_random_text_encoder_is_seeded_frozen_and_byte_level():
    from vfusion.text import PromptEncoder
    from vfusion.text_random import random_clip_text

    state = torch.random.get_rng_state()
    tok, a = random_clip_text(16, 1, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is left alone
    _, b = random_clip_text(16, 1, seed=3)
    _, c = random_clip_text(16, 1, seed=4)
    pa, pb, pc = (dict(m.named_parameters()) for m in (a, b, c))
    assert all(torch.equal(pa[k], pb[k]) for k in pa) and not all(torch.equal(pa[k], pc[k]) for k in pa)
    ids = tok("ab").input_ids
    assert ids == [tok.bos_token_id, tok.convert_tokens_to_ids("a"), tok.convert_tokens_to_ids("b</w>"),
                   tok.eos_token_id]
    enc = PromptEncoder(tok, a)
    assert not any(p.requires_grad for p in a.parameters())
    s1, _ = enc.encode(["a red ball"])
    s2, _ = enc.encode(["a grey moon"])
    assert s1.shape == (1, 77, 16) and not torch.allclose(s1, s2)


def _text_overrides(tmp_path, *extra):
    return [f"data.root={tmp_path / 'emb'}", f"data.cache_dir={tmp_path / 'cache'}", "data.embedded_num_classes=2",
            "data.embedded_train_per_class=3", "data.embedded_test_per_class=2", "data.embedded_size=32",
            "data.embedded_length=10", "data.num_frames=4", "data.resolution=16", "data.batch_size=2",
            "data.num_workers=0", "model.base.block_out_channels=[8,16]", "model.base.norm_num_groups=4",
            "model.base.attention_resolutions=[8]", "model.residual.block_out_channels=[8,16]",
            "model.residual.norm_num_groups=4", "model.residual.frame_embed_dim=8", "model.text.random_width=16",
            "model.text.random_layers=1", "pretrain.max_steps=2", "pretrain.batch_size=4", "train.max_steps=2",
            "train.progress_bar=false", "train.sample_every_n_steps=0", "train.optim.warmup_steps=0",
            "sample.steps=2", "sample.num_videos=2", "sample.batch_size=2", "eval.num_videos=4",
            "eval.batch_size=4", "eval.metrics=[flicker]", f"run_dir={tmp_path / 'run'}", *extra]


def test_a_fresh_base_cross_attends_to_the_random_encoder(tmp_path):
    from diffusers import UNet2DConditionModel

    from vfusion.backbones.adopt import adopt_backbone
    from vfusion.data import build_dataloader
    from vfusion.experiment import load_experiment_config
    from vfusion.text import PromptEncoder
    from vfusion.text_random import random_clip_text
    from vfusion.training.runner import build_module, spec_info_for

    cfg = adopt_backbone(load_experiment_config(TEXT_CONFIG, _text_overrides(tmp_path, "data.caption_dropout=0")))
    info, codec = spec_info_for(cfg)
    module = build_module(cfg, info, codec)
    unet = module.model.base.unet
    assert isinstance(unet, UNet2DConditionModel) and unet.config.cross_attention_dim == 16
    assert unet.config.num_class_embeds is None
    x, y, captions = module.prepare_batch(next(iter(build_dataloader(cfg.data, train=False, batch_size=2,
                                                                        shuffle=False))))
    assert all(c.startswith(("a red ball", "a yellow pendulum")) for c in captions)
    expected, _ = PromptEncoder(*random_clip_text(16, 1, seed=0)).encode(list(captions))  # by hand
    states = module.encode_captions(captions)[0]
    assert torch.equal(states, expected)
    t = torch.full((2,), 500)
    model = module.model.eval()
    with torch.no_grad():
        a = model(x, t, module.conditioner(None, 2, module.encode_captions(captions)))
        b = model(x, t, module.conditioner(None, 2, module.encode_captions(["a grey moon", "a wheel"])))
    assert not torch.allclose(a, b)


@pytest.mark.slow
def test_the_text_main_job_runs_end_to_end_and_hands_the_encoder_on(tmp_path, capsys):
    from vfusion.backbones.folder import inspect_backbone
    from vfusion.cli import main
    from vfusion.text import PromptEncoder
    from vfusion.text_random import random_clip_text

    assert main(["pipeline", "--config", TEXT_CONFIG, *_text_overrides(tmp_path)]) == 0
    base = tmp_path / "run_base" / "base_unet"
    folder = inspect_backbone(base)
    assert folder.needs_text and folder.has_text_encoder
    prompts = ["a red ball bouncing to the left, fast", ""]
    saved, _ = PromptEncoder.from_folder(base).encode(prompts)
    fresh, _ = PromptEncoder(*random_clip_text(16, 1, seed=0)).encode(prompts)
    assert torch.equal(saved, fresh)  # stage 2 conditions on the very encoder stage 1 trained with
    index = json.loads((tmp_path / "run" / "pipeline" / "model_index.json").read_text())
    assert index["video_config"]["base"]["captions"] is True and "text_encoder" in index
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["protocol"]["fake"]["prompts"].startswith("4 (")  # one caption per real clip


def test_text_encoder_errors_name_the_key(tmp_path):
    from vfusion.backbones.folder import BackboneError
    from vfusion.experiment import Experiment

    def spec(*extra):
        return Experiment.load(TEXT_CONFIG, _text_overrides(tmp_path, *extra)).model_spec(3, 16, 4, 0)

    with pytest.raises(BackboneError, match="model.text.encoder '.*nowhere' has no text_encoder/"):
        spec(f"model.text.encoder={tmp_path / 'nowhere'}")
    with pytest.raises(BackboneError, match="trains on captions.*model.text.encoder"):
        spec("model.text.encoder=null")
    from vfusion.config import ConfigError

    with pytest.raises(ConfigError, match="model.text.random_width' is 15"):
        Experiment.load(TEXT_CONFIG, _text_overrides(tmp_path, "model.text.random_width=15"))
