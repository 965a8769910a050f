"""Text-to-video on captioned data: every model trains on each clip's own caption through the base folder's
text encoder (checked against the encoder run by hand), caption dropout, the per-caption cache, and the
commands end to end (data check -> train -> sample --prompt / --prompts / --negative-prompt)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.backbone_folders import sd_folder
from tests.caption_data import CAPTIONS, csv_tree, run_overrides as overrides, sidecar_tree, webvid_tree
from tests.conftest import ROOT
from vfusion.cli import main
from vfusion.experiment import load_experiment_config

BASE = str(ROOT / "configs" / "embedded.yaml")
MODELS = {"videofusion": [], "video_unet": ["noise.value=0", "model.video_unet.temporal_layers=conv"],
          "dit": ["noise.value=0", "model.dit.patch_size=2"]}


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return sd_folder(tmp_path_factory.mktemp("sd"))


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory):
    return sidecar_tree(tmp_path_factory.mktemp("captioned") / "data")


def module_and_batch(tmp_path, sd, root, *extra):
    from vfusion.backbones.adopt import adopt_backbone
    from vfusion.data import build_dataloader
    from vfusion.training.runner import build_module, spec_info_for

    cfg = adopt_backbone(load_experiment_config(BASE, overrides(tmp_path, sd, root, "captions", *extra)))
    info, codec = spec_info_for(cfg)
    torch.manual_seed(0)
    module = build_module(cfg, info, codec)
    batch = next(iter(build_dataloader(cfg.data, train=False, batch_size=4, shuffle=False)))
    return module, batch


def captured_conds(module):
    seen = []
    original = module.model.forward
    module.model.forward = lambda x, t, cond=None: seen.append(cond) or original(x, t, cond)
    return seen


@pytest.mark.parametrize("name", list(MODELS))
def test_each_clip_is_conditioned_on_its_own_caption(tmp_path, sd, sidecar, name):
    from vfusion.text import PromptEncoder

    module, batch = module_and_batch(tmp_path, sd, sidecar, f"model.name={name}", "data.caption_dropout=0",
                                     *MODELS[name])
    assert module.conditioner.has_text and module.conditional is False  # captions, not classes
    x, y, captions = module.prepare_batch(batch)
    assert captions == list(CAPTIONS)
    seen = captured_conds(module)
    loss = module.diffusion_loss(x, y, captions)["total"]
    loss.backward()
    expected, _ = PromptEncoder.from_folder(sd).encode(list(CAPTIONS))  # the encoder run by hand
    assert torch.equal(seen[0].text_states(), expected)
    assert module.video_config["base"]["captions"] is True and module.video_config["num_classes"] == 0
    # the text reaches the prediction: other captions, other output
    t = torch.full((4,), 500)
    model = module.model.eval()
    with torch.no_grad():
        if name == "dit":  # adaLN-Zero and the zero cross-attention output: give the zeros values first
            for p in model.parameters():
                if not p.any():
                    p.normal_(0, 0.02)
        a = model(x, t, module.conditioner(None, 4, module.encode_captions(captions)))
        b = model(x, t, module.conditioner(None, 4, module.encode_captions(captions[::-1])))
    assert not torch.allclose(a, b)


def test_caption_dropout_gives_dropped_rows_the_empty_prompt(tmp_path, sd, sidecar):
    module, batch = module_and_batch(tmp_path, sd, sidecar, "data.caption_dropout=0.5", "model.class_dropout=0")
    assert module.class_dropout == 0.5
    x, y, captions = module.prepare_batch(batch)
    seen = captured_conds(module)
    torch.manual_seed(3)
    for _ in range(4):
        module.diffusion_loss(x, y, captions)
    dropped = torch.cat([c.uncond for c in seen])
    assert 0 < int(dropped.sum()) < dropped.numel()
    null = module.prompt_encoder.null()[0]
    states = torch.cat([c.text_states() for c in seen])
    for row, is_dropped in zip(states, dropped):
        assert torch.equal(row, null) == bool(is_dropped)


def test_each_caption_is_encoded_once_unless_the_cache_is_off(tmp_path, sd, sidecar):
    for size, after_three in ((10000, 4), (0, 12)):
        module, batch = module_and_batch(tmp_path, sd, sidecar, f"model.text.cache_size={size}")
        x, y, captions = module.prepare_batch(batch)
        start = module.prompt_encoder.encoded
        for _ in range(3):
            module.diffusion_loss(x, y, captions)
        assert module.prompt_encoder.encoded - start == after_three
    # a bounded cache keeps the most recently used captions
    module.prompt_encoder.cache_size = 2
    module.prompt_encoder.encode(list(CAPTIONS))
    assert list(module.prompt_encoder._cache) == list(CAPTIONS[2:])


def test_a_base_without_text_is_refused_on_captioned_data(tmp_path, sidecar, capsys):
    args = overrides(tmp_path, "x", sidecar)
    args = [a for a in args if not a.startswith("model.base.pretrained")]
    assert main(["train", "--config", BASE, *args]) == 2
    err = capsys.readouterr().err
    assert "trains on captions" in err and "not text-conditioned" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def check_train_sample(tmp_path, sd, root, dataset, capsys):
    assert main(["data", "check", "--dataset", dataset, "--root", str(root), "--num-frames", "4"]) == 0
    assert "captions     4 (0 missing, 0 empty, 0 unreadable" in capsys.readouterr().out
    assert main(["train", "--config", BASE, *overrides(tmp_path, sd, root, dataset)]) == 0
    run = tmp_path / "run"
    assert main(["sample", "--run", str(run), "--prompt", "a red ball", "--num-videos", "2"]) == 0
    manifest = json.loads((run / "samples" / "samples.json").read_text())
    assert manifest["prompt"] == "a red ball" and manifest["video_prompts"] == ["a red ball"] * 2
    assert len(list((run / "samples").glob("video_*.mp4"))) == 2
    vc = json.loads((run / "pipeline" / "model_index.json").read_text())["video_config"]
    assert vc["base"]["captions"] and vc["trained"]["dataset"] == dataset
    assert (run / "pipeline" / "text_encoder").is_dir() and (run / "pipeline" / "tokenizer").is_dir()
    return run


def test_sidecar_captions_check_train_sample(tmp_path, sd, sidecar, capsys):
    check_train_sample(tmp_path, sd, sidecar, "captions", capsys)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["csv", "webvid"])
def test_csv_and_webvid_captions_check_train_sample(tmp_path, sd, layout, capsys):
    root = csv_tree(tmp_path / "data") if layout == "csv" else webvid_tree(tmp_path / "data")
    check_train_sample(tmp_path, sd, root, "captions" if layout == "csv" else "webvid", capsys)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sd, sidecar):
    tmp = tmp_path_factory.mktemp("trained")
    assert main(["train", "--config", BASE, *overrides(tmp, sd, sidecar)]) == 0
    return tmp / "run"


def test_prompts_file_gives_video_i_prompt_i_mod_p(trained, tmp_path):
    from vfusion.inference.generate import load_pipeline

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball\n\n  a blue   square \nclouds\n")
    out = tmp_path / "out"
    assert main(["sample", "--run", str(trained), "--prompts", str(prompts), "--out", str(out), "--steps", "2",
                 "--batch-size", "2"]) == 0
    manifest = json.loads((out / "samples.json").read_text())
    assert manifest["prompts"] == ["a red ball", "a blue square", "clouds"] and manifest["num_videos"] == 3
    assert manifest["video_prompts"] == ["a red ball", "a blue square", "clouds"]
    import numpy as np

    pipe = load_pipeline(trained, "cpu")
    first = pipe(prompt=["a red ball", "a blue square"], num_inference_steps=2, output_type="pt", progress=False,
                 generator=torch.Generator().manual_seed(0)).frames
    from vfusion.inference.generate import to_uint8

    assert np.array_equal(np.load(out / "videos.npy")[:2], to_uint8(first))


def test_negative_prompt_replaces_the_null_text_of_guidance(trained):
    from vfusion.inference.generate import load_pipeline

    pipe = load_pipeline(trained, "cpu")

    def run(**kw):
        return pipe(prompt=["a red ball", "clouds"], num_inference_steps=2, guidance_scale=3.0, output_type="pt",
                    progress=False, generator=torch.Generator().manual_seed(0), **kw).frames

    plain = run()
    assert torch.equal(run(negative_prompt=""), plain)               # the empty prompt is the default null
    assert torch.equal(run(negative_prompt=["", ""]), plain)         # per-video nulls, same values
    other = run(negative_prompt=["blurry", ""])
    assert not torch.equal(other[0], plain[0]) and torch.equal(other[1], plain[1])
    with pytest.raises(Exception, match="3 negative prompts were given for a batch of 2"):
        run(negative_prompt=["a", "b", "c"])


def test_prompt_errors_are_one_line(trained, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    for argv, words in ((["--prompts", str(empty)], "holds no prompt"),
                        (["--prompts", str(tmp_path / "none.txt")], "cannot read the prompts file")):
        assert main(["sample", "--run", str(trained), "--out", str(tmp_path / "o"), *argv]) == 2
        assert words in capsys.readouterr().err
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\n")
    assert main(["sample", "--run", str(trained), "--out", str(tmp_path / "o"), "--prompts", str(prompts),
                 "--prompt", "b"]) == 2
    assert "not both" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_generate_takes_and_records_a_negative_prompt(trained, tmp_path):
    from vfusion.utils.video import write_mp4
    from tests.caption_data import clip

    write_mp4(tmp_path / "clip.mp4", clip(0, frames=4))
    out = tmp_path / "gen"
    assert main(["generate", "--run", str(trained), "--task", "edit", "--video", str(tmp_path / "clip.mp4"),
                 "--strength", "0.5", "--prompt", "a red ball", "--negative-prompt", "blurry", "--guidance", "2",
                 "--steps", "2", "--out", str(out)]) == 0
    record = json.loads((out / "generate.json").read_text())
    assert record["prompt"] == "a red ball" and record["negative_prompt"] == "blurry"
