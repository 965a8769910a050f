"""Tiny pretrained-backbone folders built offline with the real diffusers / transformers classes.

Each builder writes, under ``root``, a randomly initialised (seeded, deterministic) pipeline folder laid
out exactly like a hub folder of that family and returns its path, so that code loading published
backbones can be tested without a model hub (see ``docs/testing.md``):

- :func:`ddim_pixel_folder` — ``DDIMPipeline``: a pixel-space ``UNet2DModel`` (3 channels) + DDIM.
- :func:`sd_folder` — ``StableDiffusionPipeline`` (1.x layout; ``prediction_type="v_prediction"`` is
  the 2.x stand-in): cross-attention UNet on 8×8×4 latents, CLIP text encoder and tokenizer, a two-block
  AutoencoderKL (16 px ↔ 8×8×4), the SD scheduler config.
- :func:`dit_folder` — ``DiTPipeline``: class-conditional DiT on 8×8×4 latents, learned σ by default.
- :func:`pixart_folder` — PixArt-α layout: text-conditioned ``PixArtTransformer2DModel``; the T5 text
  encoder of the real folders is stood in for by the tiny CLIP encoder (no sentencepiece model offline).
- :func:`flow_folder` — the SD layout with a ``FlowMatchEulerDiscreteScheduler``: a rectified-flow
  text-to-image stand-in.

The tokenizer is byte-level: the 256 byte symbols of the GPT-2/CLIP byte-to-unicode table, the same
symbols with ``</w>``, ``<|startoftext|>`` and ``<|endoftext|>``, and no merges, so any text becomes one
token per byte. ``model_max_length`` (= the encoder's position count) is :data:`TEXT_LENGTH`, long
enough that ``"a video of {UCF-101 class}"`` prompts are not truncated.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

TEXT_LENGTH = 40  # tokenizer.model_max_length and CLIP max_position_embeddings
TEXT_DIM = 16  # CLIP hidden size = UNet cross_attention_dim = PixArt caption_channels
IMAGE_SIZE = 16  # pixels; the two-block VAE halves it
LATENT_SIZE = IMAGE_SIZE // 2
LATENT_CHANNELS = 4
# The first ImageNet-1k labels as the DiT folders spell them: synonyms separated by commas.
ID2LABEL = {0: "tench, Tinca tinca", 1: "goldfish, Carassius auratus",
            2: "great white shark, white shark, man-eater, man-eating shark, Carcharodon carcharias",
            3: "tiger shark, Galeocerdo cuvieri", 4: "hammerhead, hammerhead shark",
            5: "electric ray, crampfish, numbfish, torpedo", 6: "stingray", 7: "cock"}
SD_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                "beta_schedule": "scaled_linear", "steps_offset": 1, "clip_sample": False}
LINEAR_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
                    "beta_schedule": "linear", "clip_sample": False}


class _seeded:
    """Seed torch's CPU generator for a block and restore the caller's RNG state afterwards."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        self._fork = torch.random.fork_rng(devices=[])
        self._fork.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        return self._fork.__exit__(*exc)


def _clip_tokenizer(max_length: int = TEXT_LENGTH):
    """The package's byte-level CLIPTokenizer (one token per byte) at this module's text length."""
    from vfusion.text_random import byte_tokenizer

    return byte_tokenizer(max_length)


def _clip_text(seed: int):
    """``(tokenizer, CLIPTextModel)``: hidden 16, one layer, two heads, :data:`TEXT_LENGTH` positions."""
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = _clip_tokenizer()
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=32,
                            num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=TEXT_LENGTH,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    with _seeded(seed):
        encoder = CLIPTextModel(config).eval()
    return tokenizer, encoder


def _vae(seed: int):
    """A two-block AutoencoderKL: 16 px, 3 channels ↔ 8×8 latents, 4 channels."""
    from diffusers import AutoencoderKL

    with _seeded(seed):
        return AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                             down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                             latent_channels=LATENT_CHANNELS, norm_num_groups=4, sample_size=IMAGE_SIZE)


def _cross_attention_unet(seed: int):
    """A UNet2DConditionModel on 8×8×4 latents attending to the 16-dimensional text states."""
    from diffusers import UNet2DConditionModel

    with _seeded(seed):
        return UNet2DConditionModel(sample_size=LATENT_SIZE, in_channels=LATENT_CHANNELS,
                                    out_channels=LATENT_CHANNELS, block_out_channels=(8, 16), layers_per_block=1,
                                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=4,
                                    cross_attention_dim=TEXT_DIM, attention_head_dim=2)


def _text_pipeline(root: Path, name: str, scheduler, seed: int) -> Path:
    from diffusers import StableDiffusionPipeline

    tokenizer, text_encoder = _clip_text(seed + 1)
    pipe = StableDiffusionPipeline(vae=_vae(seed + 2), text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=_cross_attention_unet(seed), scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    folder = root / name
    pipe.save_pretrained(str(folder))
    return folder


def ddim_pixel_folder(root: Path, sample_size: int = IMAGE_SIZE, num_class_embeds: int | None = None,
                      seed: int = 0, name: str = "ddim_pixel") -> Path:
    """A ``DDIMPipeline`` folder: pixel-space ``unet/`` (UNet2DModel, 3 channels) and a linear DDIM ``scheduler/``."""
    from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel

    with _seeded(seed):
        unet = UNet2DModel(sample_size=sample_size, in_channels=3, out_channels=3, block_out_channels=(8, 16),
                           layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                           up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
                           attention_head_dim=8, num_class_embeds=num_class_embeds)
    folder = Path(root) / name
    DDIMPipeline(unet=unet, scheduler=DDIMScheduler(**LINEAR_SCHEDULER)).save_pretrained(str(folder))
    return folder


def sd_folder(root: Path, prediction_type: str = "epsilon", scheduler: str = "ddim", seed: int = 0,
              name: str | None = None) -> Path:
    """A Stable-Diffusion-1.x-style ``StableDiffusionPipeline`` folder (``v_prediction``: the 2.x stand-in).

    ``scheduler`` is ``"ddim"`` (DDIMScheduler) or ``"pndm"`` (PNDMScheduler, as the 1.x folders ship),
    both with the SD config: scaled-linear betas 0.00085–0.012, 1000 steps, ``steps_offset=1``."""
    from diffusers import DDIMScheduler, PNDMScheduler

    if scheduler == "ddim":
        sched = DDIMScheduler(**SD_SCHEDULER, set_alpha_to_one=False, prediction_type=prediction_type)
    elif scheduler == "pndm":
        config = {k: v for k, v in SD_SCHEDULER.items() if k != "clip_sample"}
        sched = PNDMScheduler(**config, set_alpha_to_one=False, skip_prk_steps=True, prediction_type=prediction_type)
    else:
        raise ValueError(f"scheduler must be 'ddim' or 'pndm', not {scheduler!r}")
    return _text_pipeline(Path(root), name or f"sd_{prediction_type}_{scheduler}", sched, seed)


def flow_folder(root: Path, seed: int = 0, name: str = "flow") -> Path:
    """The SD layout with a ``FlowMatchEulerDiscreteScheduler`` (shift 1.0): a rectified-flow text model stand-in."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    return _text_pipeline(Path(root), name, sched, seed)


def dit_folder(root: Path, learned_sigma: bool = True, seed: int = 0, name: str | None = None) -> Path:
    """A ``DiTPipeline`` folder: ``transformer/`` (patch 2 on 8×8×4 latents), ``vae/``, linear DDIM, ``id2label``.

    ``num_embeds_ada_norm=1000`` because DiTPipeline uses class id 1000 as the null class; with
    ``learned_sigma`` the transformer outputs 8 channels (ε and the σ interpolation) like published DiTs."""
    from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    with _seeded(seed):
        transformer = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=LATENT_CHANNELS,
                                            out_channels=2 * LATENT_CHANNELS if learned_sigma else LATENT_CHANNELS,
                                            num_layers=2, sample_size=LATENT_SIZE, patch_size=2,
                                            num_embeds_ada_norm=1000)
    pipe = DiTPipeline(transformer=transformer, vae=_vae(seed + 2), scheduler=DDIMScheduler(**LINEAR_SCHEDULER))
    folder = Path(root) / (name or ("dit_learned_sigma" if learned_sigma else "dit"))
    pipe.save_pretrained(str(folder))
    # save_pretrained does not keep id2label (it is not a registered config entry); the published folders
    # carry it in model_index.json, from where from_pretrained passes it back to DiTPipeline.__init__.
    index = json.loads((folder / "model_index.json").read_text())
    index["id2label"] = {str(k): v for k, v in ID2LABEL.items()}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return folder


def pixart_folder(root: Path, seed: int = 0, name: str = "pixart") -> Path:
    """A PixArt-α-layout folder: ``transformer/`` (PixArtTransformer2DModel, learned σ), ``text_encoder/``,
    ``tokenizer/``, ``vae/`` and a linear DDIM ``scheduler/``.

    The real folders ship a T5 encoder; here the tiny CLIP encoder stands in for it (``caption_channels``
    is its hidden size), so the folder exercises the same text-conditioned transformer path."""
    from diffusers import DDIMScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel

    tokenizer, text_encoder = _clip_text(seed + 1)
    with _seeded(seed):
        transformer = PixArtTransformer2DModel(num_attention_heads=2, attention_head_dim=8,
                                               in_channels=LATENT_CHANNELS, out_channels=2 * LATENT_CHANNELS,
                                               num_layers=2, sample_size=LATENT_SIZE, patch_size=2,
                                               cross_attention_dim=16, caption_channels=TEXT_DIM)
    pipe = PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=_vae(seed + 2),
                               transformer=transformer, scheduler=DDIMScheduler(**LINEAR_SCHEDULER))
    folder = Path(root) / name
    pipe.save_pretrained(str(folder))
    return folder


def clip_folder(root: Path, seed: int = 0, name: str = "clip", image_size: int = 32) -> Path:
    """A transformers ``CLIPModel`` folder with its ``CLIPProcessor`` (a 32-pixel image processor and the
    byte-level tokenizer): text and vision towers of width 16, one layer, 8-dimensional projections."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = _clip_tokenizer()
    text = dict(vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=TEXT_LENGTH, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  image_size=image_size, patch_size=8)
    with _seeded(seed):
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).eval()
    images = CLIPImageProcessor(size={"shortest_edge": image_size},
                                crop_size={"height": image_size, "width": image_size})
    folder = root / name
    model.save_pretrained(str(folder))
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(str(folder))
    return folder


BLIP_WORDS = ("a", "red", "blue", "ball", "square", "moon", "sky", "clouds", "over", "the", "sea", "bouncing",
              "drifting", "rising", "video", "of")


def blip_folder(root: Path, seed: int = 0, name: str = "blip", image_size: int = 32) -> Path:
    """A ``BlipForConditionalGeneration`` folder with its ``BlipProcessor``: a 32-pixel image processor and a
    BERT tokenizer over a few words (``[DEC]`` begins a caption, ``[SEP]`` ends it, as in the published
    BLIP captioners); towers of width 16, one layer each."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *BLIP_WORDS]
    with tempfile.TemporaryDirectory() as staging:
        (Path(staging) / "vocab.txt").write_text("\n".join(vocab) + "\n")
        tokenizer = BertTokenizer(str(Path(staging) / "vocab.txt"), bos_token="[DEC]")
    text = dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=32, encoder_hidden_size=16,
                bos_token_id=vocab.index("[DEC]"), eos_token_id=vocab.index("[SEP]"),
                sep_token_id=vocab.index("[SEP]"), pad_token_id=vocab.index("[PAD]"))
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  image_size=image_size, patch_size=8)
    with _seeded(seed):
        model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision)).eval()
    folder = root / name
    model.save_pretrained(str(folder))
    images = BlipImageProcessor(size={"height": image_size, "width": image_size})
    BlipProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(str(folder))
    return folder
