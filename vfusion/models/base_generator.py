"""Base generator φ (VideoFusion, method.md step 1): a pretrained or fresh image diffusion model.

It runs once per clip on the noisy keyframe z_t^k and predicts the process's target for it (VideoFusion converts
that to the base noise b̂). Because λ^k = 1, z_t^k is an ordinary noisy image, so a pretrained diffusers image model
serves as it is, with its own noise process (:mod:`vfusion.diffusion.resolve`). Four families
(:mod:`vfusion.backbones.folder`) share one ``forward(z, t, cond)``: ``UNet2DModel`` / ``UNet2DConditionModel``
without cross-attention take class labels through the UNet's class embedding (``num_classes + 1`` entries, the last
the null label; added zero-initialised to an unconditional checkpoint); ``UNet2DConditionModel`` with
cross-attention (Stable Diffusion) the condition's text states as ``encoder_hidden_states``;
``DiTTransformer2DModel`` class ids through its adaLN class tables (a fresh table or the checkpoint's ids,
``model.base.class_map``; null = the table's last id); ``PixArtTransformer2DModel`` text states and their mask. A
learned-σ transformer's variance channels are dropped (the samplers use fixed variances, as diffusers' DiT does).
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
from torch import nn

from vfusion.conditioning import Cond, label_ids, text_states
from vfusion.models.spec import ModelSpec
from vfusion.models.unet2d import CheckpointError, build_unet, load_unet, unet_forward

log = logging.getLogger(__name__)


def base_network(base_cfg, spec: ModelSpec) -> nn.Module:
    """The base image network: loaded from ``base_cfg.pretrained`` when set, else a fresh UNet."""
    facts = spec.base or {}
    if not base_cfg.pretrained:
        text = int(facts.get("text_dim", 0)) if facts.get("text") else 0
        return build_unet(base_cfg, spec.in_channels, spec.in_channels, spec.sample_size,
                          num_class_embeds=None if text else spec.num_class_embeds, text_dim=text)
    from vfusion.backbones.folder import inspect_backbone

    folder = inspect_backbone(base_cfg.pretrained, base_cfg.subfolder)
    if folder.in_channels != spec.in_channels:
        raise CheckpointError(f"the base model {folder.model_dir} takes {folder.in_channels} input channels but the data "
                              f"has {spec.in_channels} ({'VAE latents' if spec.in_channels != 3 else 'RGB pixels'}); "
                              "use the VAE the model was trained with (data.vae_path, or the folder's vae/)")
    check_base_size(folder, spec.sample_size)
    if folder.family == "unet":
        classes = None if facts.get("text") else spec.num_class_embeds
        return load_unet(folder.model_dir, num_class_embeds=classes)
    net = _load_transformer(folder)
    if folder.family == "dit" and facts.get("fresh_classes"):
        fresh_class_tables(net, spec.num_classes)
    return net


def check_base_size(folder, size: int) -> None:
    """The frame size the base sees (pixels or latents) fits its down-sampling or patches."""
    if folder.family == "unet":
        factor = 2 ** (len(folder.config.get("block_out_channels") or [0]) - 1)
        what = f"its {factor}x down-sampling"
    else:
        factor = int(folder.config.get("patch_size") or 1)
        what = f"its patch size {factor}"
    if size % factor:
        raise CheckpointError(f"the base model {folder.model_dir} sees {size}x{size} frames (data.resolution, in "
                              f"latents if a VAE is used), not divisible by {what}; choose data.resolution so that "
                              f"the frame size is a multiple of {factor}")


def _load_transformer(folder) -> nn.Module:
    import diffusers

    cls = getattr(diffusers, folder.model_class)
    try:
        return cls.from_pretrained(str(folder.model_dir), low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError, TypeError) as err:
        raise CheckpointError(f"cannot load the {folder.model_class} in {folder.model_dir}: "
                              f"{' '.join(str(err).split())[:300]} — check that its weights file is complete") from err


def class_tables(net: nn.Module) -> list:
    """The adaLN label-embedding modules of a diffusers DiT (one per block)."""
    return [m for m in net.modules() if type(m).__name__ == "LabelEmbedding"]


def fresh_class_tables(net: nn.Module, num_classes: int) -> None:
    """Give a DiT a class table for the dataset's ``num_classes`` (+ null) in every block.

    Every row starts as the checkpoint's own null-class row, so before fine-tuning the model
    is exactly the checkpoint's unconditional model for every class. The tables' own label
    dropout is switched off: the trainer drops conditions itself (``model.class_dropout``).
    """
    tables = class_tables(net)
    if not tables:
        raise CheckpointError("the DiT has no class tables (norm_type is not ada_norm_zero); set model.base.class_map")
    for emb in tables:
        old = emb.embedding_table.weight.data
        new = nn.Embedding(num_classes + 1, old.shape[1]).to(old)
        new.weight.data.copy_(old[-1].expand_as(new.weight))
        new.weight.keep_trainable = True  # learns even when the base is frozen (model.base.freeze)
        emb.embedding_table, emb.num_classes, emb.dropout_prob = new, num_classes, 0.0
    net.register_to_config(num_embeds_ada_norm=num_classes)


class BaseGenerator(nn.Module):
    """φ(z_t^k, t, cond) on single frames ``(B, C, H, W)`` -> the process's target.

    ``unet`` is the image network (a UNet or a transformer; the name is kept for checkpoint
    compatibility). ``facts`` is ``spec.base`` (:func:`vfusion.backbones.adopt.base_facts`):
    family, text, the checkpoint class ids of the dataset's classes (``class_ids``, null last).
    """

    def __init__(self, unet: nn.Module, num_classes: int = 0, facts: Optional[dict] = None):
        super().__init__()
        facts = dict(facts or {})
        self.unet = unet
        self.num_classes = num_classes
        self.family = facts.get("family", "unet")
        self.text = bool(facts.get("text"))
        self.out_channels = int(unet.config.in_channels)
        ids = facts.get("class_ids")
        if ids is not None and self.family == "dit":
            for i in ids:
                if int(i) < 0:
                    raise CheckpointError(f"model.base.class_ids has {i}; ids are >= 0")
        if self.family == "dit" and ids is None:
            # without a mapping every dataset class must be a row of the DiT's table (null last)
            table = int(unet.config.num_embeds_ada_norm or 0)
            ids = list(range(num_classes)) + [table] if num_classes else [table]
        self.register_buffer("class_ids", torch.tensor(ids, dtype=torch.long) if ids is not None else None,
                             persistent=False)

    def _labels(self, cond: Optional[Cond], b: int, device) -> Optional[torch.Tensor]:
        if self.text:
            return None
        ids = label_ids(cond, self.num_classes, b, device)
        if self.class_ids is None:
            return ids
        if ids is None:  # unconditional data: the checkpoint's null id
            return self.class_ids[-1].expand(b)
        return self.class_ids[ids]

    def forward(self, z_key: torch.Tensor, t: torch.Tensor, cond: Optional[Cond] = None) -> torch.Tensor:
        b = z_key.shape[0]
        labels = self._labels(cond, b, z_key.device)
        context = text_states(cond)
        if self.text and context is None:
            raise ValueError("the base model is text-conditioned but the condition has no text embeddings")
        if self.family == "unet":
            return unet_forward(self.unet, z_key, t, labels, context=context)
        if self.family == "dit":
            out = self.unet(z_key, timestep=t, class_labels=labels).sample
        else:  # pixart
            mask = cond.attention_mask() if cond is not None else None
            out = self.unet(z_key, encoder_hidden_states=context, timestep=t, encoder_attention_mask=mask,
                            added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
        return out[:, : self.out_channels]
