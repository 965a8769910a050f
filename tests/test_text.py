"""Class-name prompts and the frozen, cached text encoder (vfusion.text), checked against
diffusers' own StableDiffusionPipeline.encode_prompt on a tiny real-class SD folder."""

import json
import subprocess
import sys

import pytest
import torch

from tests.backbone_folders import TEXT_LENGTH, ddim_pixel_folder, sd_folder
from tests.conftest import ROOT
from vfusion.text import (PromptEncoder, TextEncoderError, check_template, class_prompts,
                                    split_class_name)
from vfusion.errors import UserError

# The 101 class folder names of UCF-101 (classInd.txt order).
UCF101 = """ApplyEyeMakeup ApplyLipstick Archery BabyCrawling BalanceBeam BandMarching BaseballPitch Basketball
BasketballDunk BenchPress Biking Billiards BlowDryHair BlowingCandles BodyWeightSquats Bowling BoxingPunchingBag
BoxingSpeedBag BreastStroke BrushingTeeth CleanAndJerk CliffDiving CricketBowling CricketShot CuttingInKitchen Diving
Drumming Fencing FieldHockeyPenalty FloorGymnastics FrisbeeCatch FrontCrawl GolfSwing Haircut Hammering HammerThrow
HandstandPushups HandstandWalking HeadMassage HighJump HorseRace HorseRiding HulaHoop IceDancing JavelinThrow
JugglingBalls JumpingJack JumpRope Kayaking Knitting LongJump Lunges MilitaryParade Mixing MoppingFloor Nunchucks
ParallelBars PizzaTossing PlayingCello PlayingDaf PlayingDhol PlayingFlute PlayingGuitar PlayingPiano PlayingSitar
PlayingTabla PlayingViolin PoleVault PommelHorse PullUps Punch PushUps Rafting RockClimbingIndoor RopeClimbing Rowing
SalsaSpin ShavingBeard Shotput SkateBoarding Skiing Skijet SkyDiving SoccerJuggling SoccerPenalty StillRings
SumoWrestling Surfing Swing TableTennisShot TaiChi TennisSwing ThrowDiscus TrampolineJumping Typing UnevenBars
VolleyballSpiking WalkingWithDog WallPushups WritingOnBoard YoYo""".split()


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return sd_folder(tmp_path_factory.mktemp("text"))


@pytest.fixture(scope="module")
def pipe(sd):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(str(sd))


@pytest.mark.parametrize("name,words", [
    ("ApplyEyeMakeup", "apply eye makeup"), ("YoYo", "yo yo"), ("PlayingDaf", "playing daf"), ("TaiChi", "tai chi"),
    ("JumpingJack", "jumping jack"), ("PlayingCello", "playing cello"), ("BlowDryHair", "blow dry hair"),
    ("CleanAndJerk", "clean and jerk"), ("RockClimbingIndoor", "rock climbing indoor"), ("Skijet", "skijet"),
    ("HandstandPushups", "handstand pushups"), ("HandStandPushups", "hand stand pushups"),  # the video files' spelling
    ("clouds_drift", "clouds drift"), ("Clouds Drift", "clouds drift"), ("sky-timelapse", "sky timelapse"),
    ("PlayingDVD", "playing dvd"), ("HTMLParser", "html parser"), ("ApplyAMakeup", "apply a makeup"),
    ("Top10Moves", "top 10 moves"), ("ÉtéChaud", "été chaud"),
])
def test_split_class_name(name, words):
    assert split_class_name(name) == words


def test_all_ucf101_names_split_into_distinct_lower_case_words():
    assert len(UCF101) == len(set(UCF101)) == 101
    split = [split_class_name(n) for n in UCF101]
    assert len(set(split)) == 101
    for name, words in zip(UCF101, split):
        assert words == words.lower() and words.replace(" ", "") == name.lower()
        assert len(words.split()) == sum(c.isupper() for c in name)  # UCF-101 has no acronyms


def test_class_prompts_and_template_check():
    assert class_prompts(["YoYo", "clouds_drift"]) == ["a video of yo yo", "a video of clouds drift"]
    assert class_prompts(["TaiChi"], template="{}, in slow motion") == ["tai chi, in slow motion"]
    assert class_prompts(["TaiChi"], template="{{raw}} {}") == ["{raw} tai chi"]
    assert check_template("a video of {}") == "a video of {}"
    for bad in ["a video", "{} and {}", "a {0}", "a {name}", "a {} {", "a {!r}", "a {:>3}"]:
        with pytest.raises(UserError) as err:
            class_prompts(["YoYo"], template=bad)
        assert len(str(err.value).splitlines()) == 1 and "exactly one '{}'" in str(err.value)
    with pytest.raises(UserError, match="no letters or digits"):
        class_prompts(["__"])


@pytest.mark.parametrize("prompt", ["a video of yo yo", "A Cat, sitting!", "x" * 60, ""])
def test_states_equal_diffusers_encode_prompt(sd, pipe, prompt):
    encoder = PromptEncoder.from_folder(sd)
    positive, negative = pipe.encode_prompt(prompt, torch.device("cpu"), 1, do_classifier_free_guidance=True,
                                            negative_prompt=None)
    states, mask = encoder.encode([prompt])
    assert states.dtype == torch.float32 and mask.dtype == torch.long
    assert states.shape == (1, TEXT_LENGTH, pipe.text_encoder.config.hidden_size) and mask.shape == (1, TEXT_LENGTH)
    assert torch.equal(states, positive)
    assert torch.equal(encoder.null(), negative)
    n_tokens = min(2 + len(prompt.replace(" ", "")), TEXT_LENGTH)  # one token per byte, bos and eos
    assert mask.sum().item() == n_tokens and mask[0, :n_tokens].all()


def test_batch_matches_diffusers_and_repeats(sd, pipe):
    prompts = ["a video of tai chi", "a video of yo yo", "a video of tai chi"]
    positive, negative = pipe.encode_prompt(prompts, torch.device("cpu"), 1, do_classifier_free_guidance=True)
    states, mask = PromptEncoder.from_folder(sd).encode(prompts)
    assert states.shape == positive.shape and mask.shape == (3, TEXT_LENGTH)
    assert torch.allclose(states, positive, atol=1e-6)  # one prompt at a time here: BLAS may order sums differently
    assert torch.equal(states[0], states[2])


def test_attention_mask_passed_when_config_asks(sd, pipe):
    encoder = PromptEncoder.from_folder(sd)
    plain = encoder.encode(["a cat"])[0]
    for model in (pipe.text_encoder, encoder.text_encoder):
        model.config.use_attention_mask = True
    try:
        encoder._cache.clear()
        masked = encoder.encode(["a cat"])[0]
        positive, negative = pipe.encode_prompt("a cat", torch.device("cpu"), 1, do_classifier_free_guidance=True)
    finally:
        pipe.text_encoder.config.use_attention_mask = False
    assert torch.equal(masked, positive) and torch.equal(encoder.null(), negative)
    assert not torch.equal(masked, plain)  # the padded positions see the mask


def test_each_prompt_goes_through_the_encoder_once(sd):
    encoder = PromptEncoder.from_folder(sd)
    calls = []
    encoder.text_encoder.register_forward_hook(lambda module, args, kwargs, out: calls.append(args[0].shape[0]),
                                               with_kwargs=True)
    first, _ = encoder.encode(["a", "b", "a"])
    assert calls == [1, 1] and encoder.cached == 2
    again, _ = encoder.encode(["b", "a"])
    assert calls == [1, 1] and torch.equal(again, first[[1, 0]])
    encoder.null()
    encoder.null()
    encoder.encode([""])
    assert calls == [1, 1, 1] and encoder.null().shape == (1, TEXT_LENGTH, 16)
    empty, empty_mask = encoder.encode([])
    assert empty.shape == (0, TEXT_LENGTH, 16) and empty_mask.shape == (0, TEXT_LENGTH) and len(calls) == 3
    with pytest.raises(TypeError):
        encoder.encode("a")


def test_frozen_plain_object_that_moves_once(sd):
    encoder = PromptEncoder.from_folder(sd)
    assert not isinstance(encoder, torch.nn.Module)
    assert not encoder.text_encoder.training
    assert not any(p.requires_grad for p in encoder.text_encoder.parameters())
    holder = torch.nn.Module()
    holder.prompts = encoder  # as a model attribute it adds nothing to parameters or checkpoints
    assert list(holder.parameters()) == [] and holder.state_dict() == {}
    encoder.encode(["a cat"])
    moves = []
    original = encoder.text_encoder.to
    encoder.text_encoder.to = lambda *a, **k: moves.append(a) or original(*a, **k)
    assert encoder.to("cpu") is encoder and moves == []
    encoder.to("meta")
    encoder.to("meta")
    assert len(moves) == 1 and encoder.device.type == "meta"
    assert encoder.encode(["a cat"])[0].device.type == "meta"  # the cache moved with the encoder


def test_folder_names_the_encoder_class(tmp_path, sd):
    """A T5 encoder folder gets T5EncoderModel (AutoModel would build an encoder-decoder T5Model)."""
    import shutil

    from transformers import T5Config, T5EncoderModel

    folder = tmp_path / "t5"
    shutil.copytree(sd / "tokenizer", folder / "tokenizer")
    torch.manual_seed(0)
    T5EncoderModel(T5Config(vocab_size=514, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)).save_pretrained(
        str(folder / "text_encoder"))
    encoder = PromptEncoder.from_folder(folder)  # no model_index.json: the config's architectures decide
    assert type(encoder.text_encoder).__name__ == "T5EncoderModel"
    states, mask = encoder.encode(["a cat"])
    assert states.shape == (1, TEXT_LENGTH, 16) and mask.sum() == 6
    (folder / "model_index.json").write_text(json.dumps({"text_encoder": ["transformers", "T5EncoderModel"],
                                                         "tokenizer": ["transformers", "CLIPTokenizer"]}))
    assert torch.equal(PromptEncoder.from_folder(folder).encode(["a cat"])[0], states)


def test_missing_parts_are_one_line_user_errors(tmp_path):
    pixel = ddim_pixel_folder(tmp_path)
    with pytest.raises(TextEncoderError) as err:
        PromptEncoder.from_folder(pixel)
    message = str(err.value)
    assert isinstance(err.value, UserError) and len(message.splitlines()) == 1
    assert str(pixel) in message and "text_encoder/" in message and "tokenizer/" in message and "needs both" in message
    with pytest.raises(TextEncoderError, match="does not exist"):
        PromptEncoder.from_folder(tmp_path / "nowhere")


def test_import_does_not_load_transformers():
    code = ("import sys, vfusion.text as t; "
            "assert t.class_prompts(['YoYo']) == ['a video of yo yo']; "
            "print(sorted(m for m in ('transformers', 'diffusers', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
