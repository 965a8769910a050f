"""Pretrained image folders as the base generator, through the ordinary commands.

Each kind of folder docs/usage.md lists (a Stable Diffusion 1.5-style folder: latent, text; a 2.x
v-prediction folder; a DiT-XL/2-style folder: latent, class, learned σ; a pixel-space UNet2DModel
folder) is stood in for by a tiny folder of the real classes (tests/backbone_folders.py). The run
must adopt the folder's own noise process, VAE and text encoder, train, sample and export through
``vfusion train / sample / export``, and refuse what cannot work with one line.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from tests.backbone_folders import ddim_pixel_folder, dit_folder, sd_folder
from tests.conftest import ROOT
from vfusion.cli import main
from vfusion.experiment import load_experiment_config, resolve_config

BASE = str(ROOT / "configs" / "embedded.yaml")


def small(tmp_path, folder, *extra):
    """Overrides for a tiny embedded run on ``folder`` (16 px, 4 frames, 2 classes, 2 steps)."""
    return ["data.num_frames=4", "data.resolution=16", "data.batch_size=2", "data.num_workers=0",
            "data.embedded_num_classes=2", "data.embedded_train_per_class=2", "data.embedded_test_per_class=1",
            f"data.root={tmp_path / 'data'}", f"data.cache_dir={tmp_path / 'cache'}",
            "model.residual.block_out_channels=[8,8]", "model.residual.norm_num_groups=4",
            "model.residual.frame_embed_dim=8", f"model.base.pretrained={folder}",
            # the main job's config sets v-prediction and min-SNR weighting for its own base; a checkpoint
            # brings its own prediction type, and min-SNR is not defined for rectified flow
            "diffusion.prediction_type=null", "train.loss_weighting=none",
            # and samples with DDPM (not defined for rectified flow) and guidance 3
            "sample.sampler=ddim", "sample.guidance_scale=1.0",
            "train.progress_bar=false", "train.max_minutes=0", "train.max_steps=2", "train.log_every_n_steps=1",
            "train.sample_every_n_steps=0", "sample.steps=2", "sample.batch_size=2", "sample.num_videos=2",
            f"run_dir={tmp_path / 'run'}", *extra]


def train_sample_export(tmp_path, folder, *extra, prompt=None):
    run = tmp_path / "run"
    assert main(["train", "--config", BASE, *small(tmp_path, folder, *extra)]) == 0
    sample = ["sample", "--run", str(run), "--num-videos", "2", "--steps", "2"]
    assert main(sample + (["--prompt", prompt] if prompt else [])) == 0
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "exported")]) == 0
    assert len(list((run / "samples").glob("video_*.mp4"))) == 2
    return run


def checkpoint_scheduler(folder):
    return json.loads((folder / "scheduler" / "scheduler_config.json").read_text())


def test_sd15_style_folder_trains_samples_exports_with_its_own_process_vae_and_text(tmp_path):
    folder = sd_folder(tmp_path, scheduler="pndm")  # the 1.x folders ship a PNDM scheduler config
    run = train_sample_export(tmp_path, folder, "model.class_dropout=0.5", "sample.guidance_scale=2.0",
                              prompt="a cat")
    saved = load_experiment_config(run / "config.yaml")
    theirs = checkpoint_scheduler(folder)
    for key in ("beta_schedule", "beta_start", "beta_end", "steps_offset", "set_alpha_to_one", "prediction_type"):
        assert saved.diffusion[key] == theirs[key], key
    written = json.loads((run / "scheduler" / "scheduler_config.json").read_text())
    assert written["beta_schedule"] == "scaled_linear" and written["steps_offset"] == 1
    assert saved.data.vae_path == str(folder / "vae")  # the folder's own VAE
    index = json.loads((run / "pipeline" / "model_index.json").read_text())
    assert index["text_encoder"][1] == "CLIPTextModel" and index["tokenizer"][0] == "transformers"
    vc = index["video_config"]
    assert vc["base"]["prompts"] == ["a video of bouncing ball", "a video of swinging pendulum"]
    # the text encoder is frozen and stays out of the checkpoint and the EMA
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any("text_encoder" in k or "conditioner" in k for k in ckpt["state_dict"])
    assert all(e.numel() for e in ckpt["ema"]["shadow_params"])
    n_model = sum(1 for k in ckpt["state_dict"] if k.startswith("model."))
    assert len(ckpt["ema"]["shadow_params"]) <= n_model
    samples = json.loads((run / "samples" / "samples.json").read_text())
    assert samples["prompt"] == "a cat" and samples["labels"] is None  # free text, not the classes


@pytest.mark.slow
def test_sd2_v_prediction_folder_trains_v_and_sample_through_the_pipeline(tmp_path):
    from vfusion.inference.generate import load_pipeline

    folder = sd_folder(tmp_path, prediction_type="v_prediction")
    run = train_sample_export(tmp_path, folder)
    assert load_experiment_config(run / "config.yaml").diffusion.prediction_type == "v_prediction"
    pipe = load_pipeline(tmp_path / "exported", "cpu")
    assert pipe.process.prediction_type == "v_prediction"
    out = pipe(prompt=["a dog", "a bird"], num_inference_steps=2, guidance_scale=2.0, output_type="np",
               generator=torch.Generator().manual_seed(0), progress=False)
    assert out.frames.shape == (2, 4, 16, 16, 3) and out.class_labels is None
    again = pipe(prompt=["a dog", "a bird"], num_inference_steps=2, guidance_scale=2.0, output_type="np",
                 generator=torch.Generator().manual_seed(0), progress=False)
    assert (out.frames == again.frames).all()
    other = pipe(prompt=["a fish", "a bird"], num_inference_steps=2, guidance_scale=2.0, output_type="np",
                 generator=torch.Generator().manual_seed(0), progress=False)
    assert not (other.frames[0] == out.frames[0]).all() and (other.frames[1] == out.frames[1]).all()


@pytest.mark.slow
def test_dit_folder_learned_sigma_fresh_class_tables(tmp_path):
    from vfusion.inference.generate import load_pipeline

    folder = dit_folder(tmp_path, learned_sigma=True)
    run = train_sample_export(tmp_path, folder)
    assert load_experiment_config(run / "config.yaml").diffusion.beta_schedule == "linear"
    pipe = load_pipeline(run, "cpu")
    dit = pipe.base
    assert type(dit).__name__ == "DiTTransformer2DModel" and dit.config.num_embeds_ada_norm == 2
    tables = [m.embedding_table.weight for m in dit.modules() if type(m).__name__ == "LabelEmbedding"]
    assert tables and all(t.shape[0] == 3 for t in tables)  # 2 dataset classes + null


def test_dit_fresh_tables_start_as_the_checkpoints_null_class(tmp_path):
    from diffusers import DiTTransformer2DModel

    from vfusion.models.base_generator import fresh_class_tables

    folder = dit_folder(tmp_path, learned_sigma=True)
    original = DiTTransformer2DModel.from_pretrained(str(folder / "transformer")).eval()
    fresh = DiTTransformer2DModel.from_pretrained(str(folder / "transformer")).eval()
    fresh_class_tables(fresh, 3)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 500])
    null = original(x, timestep=t, class_labels=torch.tensor([1000, 1000])).sample
    for label in range(4):  # every dataset class and the new null id
        out = fresh(x, timestep=t, class_labels=torch.tensor([label, label])).sample
        assert torch.equal(out, null)


@pytest.mark.slow
def test_pixel_unet2d_folder_trains_with_its_linear_schedule(tmp_path):
    folder = ddim_pixel_folder(tmp_path)
    run = train_sample_export(tmp_path, folder)
    saved = load_experiment_config(run / "config.yaml")
    assert saved.diffusion.beta_schedule == "linear" and saved.data.vae_path is None
    index = json.loads((run / "pipeline" / "model_index.json").read_text())
    assert index["base"][1] == "UNet2DModel" and index.get("vae", [None])[0] is None


# ---- adoption rules ------------------------------------------------------------------------------

def _adopt(folder, *overrides):
    from vfusion.backbones.adopt import adopt_backbone

    return adopt_backbone(resolve_config({"name": "a"}, overrides=[f"model.base.pretrained={folder}", *overrides]))


def test_resolved_process_equals_the_checkpoints(tmp_path):
    from diffusers import DDIMScheduler

    from vfusion.backbones.adopt import experiment_process

    folder = sd_folder(tmp_path, prediction_type="v_prediction")
    cfg = _adopt(folder)
    process = experiment_process(cfg)
    theirs = DDIMScheduler.from_pretrained(str(folder), subfolder="scheduler")
    assert torch.equal(process.alphas_cumprod, theirs.alphas_cumprod)
    for key in ("prediction_type", "timestep_spacing", "steps_offset", "set_alpha_to_one", "clip_sample"):
        assert process.config[key] == theirs.config[key] == cfg.diffusion[key], key
    assert experiment_process(cfg).config == process.config  # the resolved config resolves to itself


def test_a_conflicting_diffusion_key_fails_naming_both_values(tmp_path):
    from vfusion.diffusion.resolve import ProcessConflictError

    folder = sd_folder(tmp_path, prediction_type="v_prediction")
    with pytest.raises(ProcessConflictError) as err:
        _adopt(folder, "diffusion.prediction_type=epsilon")
    msg = str(err.value)
    assert "'epsilon'" in msg and "'v_prediction'" in msg and "override_checkpoint" in msg and "\n" not in msg
    with pytest.raises(ProcessConflictError):
        _adopt(folder, "diffusion.beta_schedule=squaredcos_cap_v2")
    _adopt(folder, "diffusion.beta_schedule=scaled_linear")  # the same value is no conflict


def test_override_flag_wins_with_a_warning(tmp_path, caplog):
    folder = sd_folder(tmp_path, prediction_type="v_prediction")
    with caplog.at_level(logging.WARNING):
        cfg = _adopt(folder, "diffusion.prediction_type=epsilon", "diffusion.override_checkpoint=true")
    assert cfg.diffusion.prediction_type == "epsilon" and cfg.diffusion.beta_schedule == "scaled_linear"
    assert any("override_checkpoint" in r.message and "v_prediction" in r.message for r in caplog.records)


def test_without_a_scheduler_file_the_experiment_decides_and_says_so(tmp_path, caplog):
    import shutil

    folder = ddim_pixel_folder(tmp_path)
    shutil.rmtree(folder / "scheduler")
    with caplog.at_level(logging.INFO):
        cfg = _adopt(folder, "diffusion.prediction_type=v_prediction")
    assert cfg.diffusion.beta_schedule == "squaredcos_cap_v2" and cfg.diffusion.prediction_type == "v_prediction"
    assert any("no scheduler config" in r.message for r in caplog.records)


# ---- bad input: one line each ----------------------------------------------------------------------

def _one_line_error(tmp_path, folder, *extra, capsys):
    rc = main(["train", "--config", BASE, *small(tmp_path, folder, *extra)])
    err = capsys.readouterr().err.strip().splitlines()[-1]  # progress bars (dataset generation) come before it
    assert rc == 2 and err.startswith("vfusion train: error: ") and "Traceback" not in err, err
    assert not (tmp_path / "run" / "config.yaml").exists()  # refused before anything was written
    return err


def test_text_unet_without_text_encoder(tmp_path, capsys):
    import shutil

    folder = sd_folder(tmp_path)
    shutil.rmtree(folder / "text_encoder")
    assert "text_encoder/" in _one_line_error(tmp_path, folder, capsys=capsys)


def test_latent_channels_not_the_vaes(tmp_path, capsys):
    from diffusers import AutoencoderKL

    folder = sd_folder(tmp_path)
    AutoencoderKL(latent_channels=3, block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4).save_pretrained(str(tmp_path / "v3"))
    err = _one_line_error(tmp_path, folder, f"data.vae_path={tmp_path / 'v3'}", capsys=capsys)
    assert "3-channel" in err and "4 channels" in err


def test_unsupported_scheduler_and_prediction_type(tmp_path, capsys):
    folder = sd_folder(tmp_path)
    f = folder / "scheduler" / "scheduler_config.json"
    cfg = json.loads(f.read_text())
    f.write_text(json.dumps({**cfg, "_class_name": "ScoreSdeVeScheduler"}))
    assert "ScoreSdeVeScheduler" in _one_line_error(tmp_path, folder, capsys=capsys)
    f.write_text(json.dumps({**cfg, "prediction_type": "flow_prediction"}))
    assert "flow_prediction" in _one_line_error(tmp_path, folder, capsys=capsys)


def test_dit_class_ids_that_do_not_fit(tmp_path, capsys):
    folder = dit_folder(tmp_path)
    err = _one_line_error(tmp_path, folder, "model.base.class_map=checkpoint", "model.base.class_ids=[3,1200]",
                          capsys=capsys)
    assert "1200" in err and "1000" in err
    err = _one_line_error(tmp_path, folder, "model.base.class_map=checkpoint", capsys=capsys)
    assert "BouncingBall" in err  # no id2label entry for the embedded classes


def test_a_resolution_the_vae_and_model_cannot_take(tmp_path, capsys):
    folder = dit_folder(tmp_path)
    err = _one_line_error(tmp_path, folder, "data.resolution=18", capsys=capsys)
    assert "9x9" in err and "not divisible by 2" in err  # 18 px -> 9x9 latents, DiT patches of 2


@pytest.mark.slow
def test_flow_matching_folder_selects_rectified_flow(tmp_path):
    from tests.backbone_folders import flow_folder
    from vfusion.inference.generate import load_pipeline

    folder = flow_folder(tmp_path)
    run = train_sample_export(tmp_path, folder, prompt="a time-lapse of clouds")
    saved = load_experiment_config(run / "config.yaml")
    assert saved.diffusion.kind == "flow" and saved.diffusion.beta_schedule is None
    written = json.loads((run / "pipeline" / "scheduler" / "scheduler_config.json").read_text())
    assert written["_class_name"] == "FlowMatchEulerDiscreteScheduler"
    assert load_pipeline(tmp_path / "exported", "cpu").process.kind == "flow"


@pytest.mark.slow
@pytest.mark.parametrize("process", ["diffusion.prediction_type=sample", "diffusion.prediction_type=v_prediction",
                                     "diffusion.kind=flow"])
def test_prediction_types_and_flow_train_through_the_cli_with_the_projects_own_base(tmp_path, process):
    run = tmp_path / "run"
    args = [a for a in small(tmp_path, "x") if not a.startswith("model.base.pretrained")]
    args += ["model.base.block_out_channels=[8,16]", "model.base.norm_num_groups=4", process]
    assert main(["train", "--config", BASE, *args]) == 0
    assert main(["sample", "--run", str(run), "--num-videos", "2", "--steps", "2"]) == 0
    saved = load_experiment_config(run / "config.yaml")
    key, value = process.split("=")
    assert saved[key.split(".")[0]][key.split(".")[1]] == value
    from vfusion.inference.generate import load_pipeline

    pipe = load_pipeline(run, "cpu")
    assert pipe.process.kind == ("flow" if value == "flow" else "ddpm")
    videos = np.load(run / "samples" / "videos.npy")
    assert videos.shape[0] == 2 and np.isfinite(videos).all()
    from vfusion.errors import UserError

    with pytest.raises(UserError, match="not text-conditioned"):
        pipe(prompt="a cat", num_inference_steps=2, progress=False)


@pytest.mark.slow
def test_pixart_folder_text_transformer_trains_samples_exports(tmp_path):
    from tests.backbone_folders import pixart_folder
    from vfusion.inference.generate import load_pipeline

    folder = pixart_folder(tmp_path)
    train_sample_export(tmp_path, folder, "model.class_dropout=0.5", "sample.guidance_scale=2.0",
                        prompt="a red ball")
    pipe = load_pipeline(tmp_path / "exported", "cpu")
    assert type(pipe.base).__name__ == "PixArtTransformer2DModel" and pipe.text_conditioned
    out = pipe(prompt="a red ball", batch_size=1, num_inference_steps=2, output_type="latent", progress=False,
               generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (1, 4, 4, 8, 8)  # 4 latent channels (learned-σ half dropped), 4 frames, 8x8
