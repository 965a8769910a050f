"""Adopting a pretrained base folder: its noise process, its VAE, its text encoder, its classes.

:func:`adopt_backbone` runs before a run writes anything. It reads the folder that ``model.base.pretrained`` names
(:func:`vfusion.backbones.folder.inspect_backbone`, JSON only) and returns the experiment config with
``diffusion.*`` resolved from the checkpoint's scheduler (:mod:`vfusion.diffusion.resolve`) and, when the model
works on latents and the experiment names no VAE, ``data.vae_path`` set to the folder's own VAE (its
``scaling_factor`` comes with it). It refuses, with one line each, what cannot work: a text-conditioned model
without its text encoder, latent channels that are not the VAE's, DiT class ids that do not fit.
:func:`base_facts` says how the base generator calls the model (``spec.base``), and :func:`experiment_process`
builds the run's process.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from vfusion.backbones.folder import BackboneError, BackboneFolder, inspect_backbone, read_json

log = logging.getLogger(__name__)

# model.text.encoder's value for a randomly initialised CLIP text model (vfusion.text_random)
RANDOM_ENCODER = "random"


def base_folder(cfg: DictConfig) -> Optional[BackboneFolder]:
    base = cfg.model.base
    return inspect_backbone(base.pretrained, base.subfolder) if base.pretrained else None


def _resolved_process(cfg: DictConfig, quiet: bool = True):
    """The :class:`~vfusion.diffusion.resolve.ResolvedProcess` of an experiment."""
    from vfusion.diffusion.resolve import resolve_process

    folder = base_folder(cfg)
    section = OmegaConf.to_container(cfg.diffusion, resolve=True)
    checkpoint = folder.scheduler_config() if folder is not None else None
    if folder is not None and checkpoint is None and not quiet:
        log.info("no scheduler config beside %s: the noise process comes from the experiment's diffusion section",
                 folder.model_dir)
    where = str(folder.scheduler_file) if folder is not None and folder.scheduler_file else None
    return resolve_process(section, checkpoint, where, override=bool(cfg.diffusion.override_checkpoint))


def experiment_process(cfg: DictConfig):
    """The run's DiffusionProcess / FlowProcess."""
    from vfusion.diffusion.factory import make_process

    return make_process(_resolved_process(cfg).scheduler_config)


def adopt_backbone(cfg: DictConfig) -> DictConfig:
    """``cfg`` with the process and VAE of its base folder filled in (checked by :mod:`vfusion.experiment`)."""
    from vfusion.config import merge_config

    res = _resolved_process(cfg, quiet=False)
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    for key, value in res.section.items():
        out.diffusion[key] = value
    log.info("noise process: %s from %s", _short(res.section), res.source)
    folder = base_folder(cfg)
    if folder is not None:
        _adopt_vae(out, folder)
    return merge_config(out)


def _short(section: dict) -> str:
    keys = ("kind", "prediction_type", "beta_schedule", "num_train_timesteps", "timestep_spacing", "shift")
    return ", ".join(f"{k}={section[k]}" for k in keys if section.get(k) is not None)


def _adopt_vae(cfg: DictConfig, folder: BackboneFolder) -> None:
    latent = folder.in_channels != 3
    if cfg.data.vae_path:
        if folder.vae_dir is not None and _vae_root(cfg.data.vae_path) != folder.vae_dir.resolve():
            log.warning("data.vae_path %s is not the base folder's own VAE (%s); the base model was trained on the "
                        "latents of its own VAE", cfg.data.vae_path, folder.vae_dir)
        vae_cfg = read_json(_vae_root(cfg.data.vae_path) / "config.json")
    elif latent:
        if folder.vae_dir is None:
            raise BackboneError(f"the base model {folder.model_dir} takes {folder.in_channels}-channel latents but "
                                f"{folder.root} has no vae/; set data.vae_path to the AutoencoderKL it was trained with")
        cfg.data.vae_path = str(folder.vae_dir)
        log.info("latents through the base folder's own VAE: %s", folder.vae_dir)
        vae_cfg = read_json(folder.vae_dir / "config.json")
    else:
        return
    channels = int(vae_cfg.get("latent_channels", 4))
    if channels != folder.in_channels:
        raise BackboneError(f"the VAE ({cfg.data.vae_path}) makes {channels}-channel latents but the base model "
                            f"{folder.model_dir} takes {folder.in_channels} channels; use the model's own VAE")


def _vae_root(path):
    """The AutoencoderKL folder ``data.vae_path`` names (a model dir, or a pipeline dir's ``vae/``)."""
    from vfusion.data.latents import vae_dir

    root, subfolder = vae_dir(path)
    return (root / subfolder if subfolder else root).resolve()


def text_dim(folder: BackboneFolder) -> int:
    """The width of the folder's text-encoder states."""
    return _encoder_width(folder.text_encoder_dir)


def fresh_text_encoder(cfg: DictConfig) -> Optional[str]:
    """``model.text.encoder`` where it applies: a fresh base (a pretrained base brings its own encoder)."""
    return None if cfg.model.base.pretrained else cfg.model.text.get("encoder")


def prompt_encoder(cfg: DictConfig):
    """The frozen :class:`~vfusion.text.PromptEncoder` of a text-conditioned experiment."""
    from vfusion.text import PromptEncoder

    cache = int(cfg.model.text.cache_size)
    folder = base_folder(cfg)
    if folder is not None:
        return PromptEncoder.from_folder(folder.text_encoder_dir.parent, cache_size=cache)
    encoder = fresh_text_encoder(cfg)
    if encoder == RANDOM_ENCODER:
        from vfusion.text_random import random_clip_text

        t = cfg.model.text
        tokenizer, model = random_clip_text(int(t.random_width), int(t.random_layers), int(t.random_seed))
        return PromptEncoder(tokenizer, model, source="model.text.encoder=random", cache_size=cache)
    return PromptEncoder.from_folder(encoder, cache_size=cache)


def _fresh_text_dim(cfg: DictConfig) -> int:
    encoder = fresh_text_encoder(cfg)
    if encoder == RANDOM_ENCODER:
        return int(cfg.model.text.random_width)
    from pathlib import Path

    root = Path(encoder).expanduser()
    for name in ("text_encoder", "tokenizer"):
        if not (root / name).is_dir():
            raise BackboneError(f"model.text.encoder '{encoder}' has no {name}/; name a folder with tokenizer/ and "
                                f"text_encoder/ (a Stable Diffusion-style folder), or 'random'")
    return _encoder_width(root / "text_encoder")


def _encoder_width(path) -> int:
    cfg = read_json(path / "config.json")
    cfg = cfg.get("text_config", cfg)
    dim = cfg.get("hidden_size") or cfg.get("d_model")
    if not dim:
        raise BackboneError(f"{path}/config.json names no hidden_size / d_model")
    return int(dim)


def base_facts(cfg: DictConfig, num_classes: int, class_names: Sequence[str] = ()) -> dict:
    """How the base generator calls its image model (``spec.base``; kept in the pipeline's video_config)."""
    from vfusion.data.registry import has_captions

    folder = base_folder(cfg)
    captioned = has_captions(cfg.data.dataset)
    fresh_text = folder is None and fresh_text_encoder(cfg) is not None
    if captioned and not fresh_text and (folder is None or not folder.needs_text):
        what = "the project's own fresh UNet" if folder is None else folder.describe()
        raise BackboneError(f"data.dataset={cfg.data.dataset} trains on captions, but the base ({what}) "
                            "is not text-conditioned; set model.base.pretrained to a text base folder (Stable "
                            "Diffusion layout: unet/ with cross-attention, text_encoder/, tokenizer/), or "
                            "model.text.encoder (a text encoder folder, or 'random') for a fresh base, or use "
                            "data.dataset=folder to train without the captions")
    if folder is None:
        if not fresh_text:
            return {"family": "unet", "text": False}
        return {"family": "unet", "text": True,
                **_text_facts(cfg, _fresh_text_dim(cfg), num_classes, class_names, captioned)}
    facts: dict = {"family": folder.family, "model_class": folder.model_class, "text": folder.needs_text,
                   "learned_sigma": folder.learned_sigma}
    if folder.needs_text:
        if not folder.has_text_encoder:
            raise BackboneError(f"{folder.model_dir} is a text-conditioned {folder.model_class} but {folder.root} has "
                                "no text_encoder/ and tokenizer/; point model.base.pretrained at the whole pipeline "
                                "folder (a text-conditioned base needs its text encoder)")
        dim = text_dim(folder)
        want = folder.config.get("cross_attention_dim") or folder.config.get("caption_channels")
        want = want[0] if isinstance(want, (list, tuple)) else want
        if want is not None and int(want) != dim and folder.family == "unet":
            raise BackboneError(f"the text encoder in {folder.text_encoder_dir} makes {dim}-wide states but the UNet "
                                f"attends to {want}-wide ones; the folder's parts do not belong together")
        facts.update(_text_facts(cfg, dim, num_classes, class_names, captioned))
    if folder.family == "dit":
        facts.update(_dit_classes(cfg, folder, num_classes, class_names))
    return facts


def _text_facts(cfg: DictConfig, dim: int, num_classes: int, class_names: Sequence[str], captioned: bool) -> dict:
    from vfusion.text import class_prompts

    if num_classes:
        prompts = class_prompts(list(class_names)[:num_classes], cfg.model.text.template)
    else:  # unconditional data; captioned data: the prompt sampling uses when given none
        prompts = [cfg.model.text.prompt or dataset_prompt(cfg.data.dataset)]
    facts = {"text_dim": dim, "prompts": prompts, "template": cfg.model.text.template}
    if captioned:
        facts["captions"] = True
    return facts


def dataset_prompt(name: str) -> str:
    from vfusion.data.registry import default_prompt

    return default_prompt(name)


def _dit_classes(cfg: DictConfig, folder: BackboneFolder, num_classes: int, class_names: Sequence[str]) -> dict:
    table = folder.num_class_ids
    if not table:
        raise BackboneError(f"{folder.model_dir}: the DiT has no class table (num_embeds_ada_norm); the project "
                            "calls a DiT base with class labels")
    if num_classes == 0:
        return {"class_ids": [table]}  # every clip: the checkpoint's null class
    base = cfg.model.base
    if base.class_map == "fresh":
        return {"fresh_classes": True}
    ids = list(base.class_ids) if base.class_ids is not None else _ids_by_name(folder, class_names[:num_classes])
    if len(ids) != num_classes:
        raise BackboneError(f"model.base.class_ids has {len(ids)} ids but the dataset has {num_classes} classes; give "
                            "one checkpoint id per class")
    bad = [i for i in ids if not 0 <= int(i) < table]
    if bad:
        raise BackboneError(f"model.base.class_ids {bad} do not fit the DiT's {table} classes (ids 0..{table - 1}); "
                            "fix the ids or use model.base.class_map=fresh")
    return {"class_ids": [int(i) for i in ids] + [table]}


def _ids_by_name(folder: BackboneFolder, class_names: Sequence[str]) -> list[int]:
    from vfusion.text import split_class_name

    if not folder.id2label:
        raise BackboneError(f"model.base.class_map=checkpoint needs model.base.class_ids, or an id2label in "
                            f"{folder.root}/model_index.json to match the class names against")
    lookup = {}
    for cid, names in folder.id2label.items():
        for name in str(names).split(","):
            lookup.setdefault(" ".join(name.lower().split()), cid)
    ids, missing = [], []
    for name in class_names:
        key = split_class_name(name)
        (ids.append(lookup[key]) if key in lookup else missing.append(name))
    if missing:
        raise BackboneError(f"classes {missing[:5]} have no id2label entry in {folder.root}; set model.base.class_ids "
                            "(one checkpoint id per class) or model.base.class_map=fresh")
    return ids
