"""The tiny backbone folders load back with the real diffusers pipeline classes and generate."""

import json

import pytest
import torch

from tests.backbone_folders import (ID2LABEL, IMAGE_SIZE, LATENT_CHANNELS, LATENT_SIZE, TEXT_LENGTH, ddim_pixel_folder,
                                    dit_folder, flow_folder, pixart_folder, sd_folder)

LATENTS = (1, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE)


def _weights(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.safetensors"))}


def test_ddim_pixel_folder_generates(tmp_path):
    from diffusers import DDIMPipeline

    pipe = DDIMPipeline.from_pretrained(str(ddim_pixel_folder(tmp_path)))
    generator = torch.Generator().manual_seed(0)
    image = pipe(batch_size=1, num_inference_steps=2, output_type="np", generator=generator).images
    assert image.shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3)


def test_ddim_pixel_folder_with_classes(tmp_path):
    from diffusers import UNet2DModel

    folder = ddim_pixel_folder(tmp_path, sample_size=8, num_class_embeds=3)
    unet = UNet2DModel.from_pretrained(str(folder / "unet"))
    assert unet.config.num_class_embeds == 3 and unet.config.sample_size == 8
    out = unet(torch.randn(2, 3, 8, 8), torch.tensor([1, 999]), class_labels=torch.tensor([0, 2])).sample
    assert out.shape == (2, 3, 8, 8)


@pytest.mark.parametrize("prediction_type,scheduler,cls", [("epsilon", "ddim", "DDIMScheduler"),
                                                           ("epsilon", "pndm", "PNDMScheduler"),
                                                           ("v_prediction", "ddim", "DDIMScheduler")])
def test_sd_folder_generates(tmp_path, prediction_type, scheduler, cls):
    from diffusers import StableDiffusionPipeline

    folder = sd_folder(tmp_path, prediction_type=prediction_type, scheduler=scheduler)
    pipe = StableDiffusionPipeline.from_pretrained(str(folder))
    config = pipe.scheduler.config
    assert type(pipe.scheduler).__name__ == cls and config.prediction_type == prediction_type
    assert (config.beta_schedule, config.beta_start, config.beta_end, config.num_train_timesteps) == \
        ("scaled_linear", 0.00085, 0.012, 1000)
    assert config.steps_offset == 1 and config.set_alpha_to_one is False
    assert pipe.tokenizer.model_max_length == TEXT_LENGTH <= pipe.text_encoder.config.max_position_embeddings
    out = pipe(prompt="a cat", num_inference_steps=2, height=IMAGE_SIZE, width=IMAGE_SIZE, output_type="latent",
               generator=torch.Generator().manual_seed(0)).images
    assert out.shape == LATENTS and torch.isfinite(out).all()


def test_sd_folder_decodes_and_is_deterministic(tmp_path):
    from diffusers import StableDiffusionPipeline

    first, second = sd_folder(tmp_path / "a"), sd_folder(tmp_path / "b")
    assert _weights(first) == _weights(second)
    pipe = StableDiffusionPipeline.from_pretrained(str(first))
    image = pipe(prompt="a dog", num_inference_steps=1, height=IMAGE_SIZE, width=IMAGE_SIZE, output_type="np").images
    assert image.shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3)
    ids = pipe.tokenizer("a cat").input_ids  # one token per byte, the space dropped: a</w> c a t</w>
    assert ids[0] == pipe.tokenizer.bos_token_id and ids[-1] == pipe.tokenizer.eos_token_id and len(ids) == 2 + 4


def test_flow_folder_steps(tmp_path):
    from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler

    pipe = DiffusionPipeline.from_pretrained(str(flow_folder(tmp_path)))
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler) and pipe.scheduler.config.shift == 1.0
    states, _ = pipe.encode_prompt("a cat", "cpu", 1, do_classifier_free_guidance=False)
    pipe.scheduler.set_timesteps(2)
    x = torch.randn(LATENTS, generator=torch.Generator().manual_seed(0))
    for t in pipe.scheduler.timesteps:
        velocity = pipe.unet(x, t, encoder_hidden_states=states).sample
        x = pipe.scheduler.step(velocity, t, x).prev_sample
    assert x.shape == LATENTS and torch.isfinite(x).all()


@pytest.mark.parametrize("learned_sigma", [True, False])
def test_dit_folder_generates(tmp_path, learned_sigma):
    from diffusers import DiTPipeline

    folder = dit_folder(tmp_path, learned_sigma=learned_sigma)
    pipe = DiTPipeline.from_pretrained(str(folder))
    transformer = pipe.transformer.config
    assert transformer.out_channels == (8 if learned_sigma else 4) and transformer.num_embeds_ada_norm == 1000
    assert pipe.get_label_ids(["white shark", "tench"]) == [2, 0]
    stored = json.loads((folder / "model_index.json").read_text())["id2label"]
    assert stored == {str(k): v for k, v in ID2LABEL.items()}
    image = pipe(class_labels=[2], num_inference_steps=2, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3)


def test_pixart_folder_generates(tmp_path):
    from diffusers import PixArtAlphaPipeline

    pipe = PixArtAlphaPipeline.from_pretrained(str(pixart_folder(tmp_path)))
    assert pipe.transformer.config.out_channels == 8
    assert pipe.transformer.config.caption_channels == pipe.text_encoder.config.hidden_size
    out = pipe(prompt="a cat", num_inference_steps=2, height=IMAGE_SIZE, width=IMAGE_SIZE, output_type="latent",
               use_resolution_binning=False, clean_caption=False, max_sequence_length=TEXT_LENGTH,
               generator=torch.Generator().manual_seed(0)).images
    assert out.shape == LATENTS and torch.isfinite(out).all()
