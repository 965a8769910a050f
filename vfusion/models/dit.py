"""Spacetime-patch DiT baseline (Latte, Ma et al. 2024, arXiv 2401.03048; method.md "Baselines").

The clip (pixels or VAE latents) is cut into tubelets of ``pt`` frames x ``p`` x ``p`` pixels, each a token, and a
transformer of alternating spatial blocks (tokens of one frame-slot attend to each other) and temporal blocks (tokens
at one spatial position attend across time) predicts the noise, conditioned on (t, class) through adaLN-Zero, with
fixed sin-cos positions (2D over the patch grid, 1D over time). A plain eps-predictor: the noise process is the
trainer's business. The network is :class:`diffusers.LatteTransformer3DModel` (diffusers 0.42; ``out_channels`` =
the input channels: no learned sigma); ours are the tubelets (:func:`fold_tubelets`), the class conditioning
(:class:`TimestepClassEmbedding`), the text path and the zero initialisation (:class:`SpacetimeDiT`).
``model.dit.size``: ``depth`` counts all blocks, as in Latte's configs (Latte-S: 12 = 6 spatial + 6 temporal); with
adaLN-single there is no per-block modulation MLP, so Latte-S/B here have fewer parameters than the paper's
(per-block adaLN).
"""

from __future__ import annotations

from typing import Optional

import torch
from diffusers import LatteTransformer3DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.embeddings import LabelEmbedding
from torch import nn

from vfusion.conditioning import Cond, label_ids
from vfusion.models.spec import ModelSpec
from vfusion.models.unet2d import count_parameters

# size -> (hidden_size, depth = spatial + temporal blocks, num_heads)
DIT_SIZES = {"tiny": (64, 4, 4), "S": (384, 12, 6), "B": (768, 12, 12)}


def fold_tubelets(x: torch.Tensor, pt: int) -> torch.Tensor:
    """``(B, C, T, H, W) -> (B, C*pt, T/pt, H, W)``: each group of ``pt`` frames into channels.

    Latte patchifies frame by frame only. Folded first, Latte's ``Conv2d`` patch embedding over ``C * pt``
    channels *is* a (pt, p, p) tubelet embedding, and its unpatchify followed by :func:`unfold_tubelets` is the
    inverse: one network for every temporal patch size, so the ``pt`` ablation changes only the tokeniser.
    """
    b, c, t, h, w = x.shape
    if t % pt:
        raise ValueError(f"{t} frames are not divisible by the temporal patch size {pt}")
    return x.reshape(b, c, t // pt, pt, h, w).permute(0, 1, 3, 2, 4, 5).reshape(b, c * pt, t // pt, h, w)


def unfold_tubelets(x: torch.Tensor, pt: int) -> torch.Tensor:
    """Inverse of :func:`fold_tubelets`."""
    b, cp, n, h, w = x.shape
    return x.reshape(b, cp // pt, pt, n, h, w).permute(0, 1, 3, 2, 4, 5).reshape(b, cp // pt, n * pt, h, w)


class TimestepClassEmbedding(nn.Module):
    """c = emb(t) + emb(y): drop-in for Latte's ``adaln_single.emb`` taking packed ``(B, 2)`` = (t, y).

    Latte conditions its adaLN only on the timestep; as its timestep embedder this puts the class into the
    adaLN conditioning, as in DiT. Latte's ``forward`` passes ``timestep`` only to this embedder, so (t, y)
    travel packed.
    """

    def __init__(self, timestep_embedding: nn.Module, num_class_embeds: int, hidden_size: int):
        super().__init__()
        self.timestep = timestep_embedding  # Latte's own (PixArt) timestep embedder
        # our labels already include the null label, so no extra dropout entry / dropout here
        self.labels = LabelEmbedding(num_class_embeds, hidden_size, dropout_prob=0.0)
        nn.init.normal_(self.labels.embedding_table.weight, std=0.02)

    def forward(self, timestep, resolution=None, aspect_ratio=None, batch_size=None, hidden_dtype=None):
        t, y = timestep[:, 0], timestep[:, 1].round().long()
        return self.timestep(t, resolution, aspect_ratio, batch_size, hidden_dtype) + self.labels(y).to(hidden_dtype)


class SpacetimeDiT(ModelMixin, ConfigMixin):
    """``forward(x_t (B,C,T,H,W), t (B,), cond) -> prediction (B,C,T,H,W)``; a diffusers ModelMixin.

    Latte takes text through cross-attention (``caption_projection``, always applied). Without text that path
    is removed (``caption_projection`` -> ``Identity`` fed a dummy token; with ``cross_attention_dim=None`` no
    block reads it), so no weights are dead. With a text-conditioned base folder (``text_dim`` > 0: its text
    encoder's width) Latte's own path is used: ``caption_projection`` maps the text states to the hidden size
    and every spatial block cross-attends to them (the mask, when the Cond has one, as PixArt passes it: a bias
    per token); the class table is then not built.
    """

    _supports_gradient_checkpointing = True  # Latte's blocks checkpoint themselves

    @register_to_config
    def __init__(self, in_channels: int, sample_size: int, num_frames: int, num_classes: int = 0,
                 hidden_size: int = 64, depth: int = 4, num_heads: int = 4, patch_size: int = 4,
                 temporal_patch_size: int = 1, text_dim: int = 0):
        super().__init__()
        if depth < 2 or depth % 2:
            raise ValueError(f"DiT depth {depth}: must be even (alternating spatial and temporal blocks)")
        if hidden_size % num_heads:
            raise ValueError(f"DiT hidden size {hidden_size} is not divisible by {num_heads} heads")
        if sample_size % patch_size:
            raise ValueError(f"frame size {sample_size} is not divisible by the patch size {patch_size}")
        if num_frames % temporal_patch_size:
            raise ValueError(f"{num_frames} frames are not divisible by the temporal patch size {temporal_patch_size}")
        self.num_frames = num_frames
        self.num_classes = 0 if text_dim else num_classes  # text replaces the class table
        num_classes = self.num_classes
        self.text_dim = int(text_dim)
        self.temporal_patch_size = temporal_patch_size
        channels = in_channels * temporal_patch_size
        self.latte = LatteTransformer3DModel(
            num_attention_heads=num_heads, attention_head_dim=hidden_size // num_heads,
            in_channels=channels, out_channels=channels, num_layers=depth // 2,
            cross_attention_dim=hidden_size if text_dim else None,
            attention_bias=True, sample_size=sample_size, patch_size=patch_size, activation_fn="gelu-approximate",
            norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
            caption_channels=text_dim or 1, video_length=num_frames // temporal_patch_size)
        if not text_dim:
            self.latte.caption_projection = nn.Identity()  # no text: see the class docstring
        if num_classes > 0:
            self.latte.adaln_single.emb = TimestepClassEmbedding(self.latte.adaln_single.emb, num_classes + 1,
                                                                 hidden_size)
        self._zero_init()

    def _zero_init(self) -> None:
        """adaLN-Zero: modulation output, per-block tables and final layer at zero.

        Latte shares one modulation MLP across blocks (PixArt's adaLN-single) plus a learned per-block table.
        With that MLP's output layer, every table (so all gates, shifts and scales) and the final projection at
        zero, each block is the identity and the model outputs exactly zero; because of the zero gates and final
        layer, parameters inside the blocks receive gradient from the second optimiser step on (as in DiT).
        """
        latte = self.latte
        for p in (latte.adaln_single.linear.weight, latte.adaln_single.linear.bias, latte.scale_shift_table,
                  latte.proj_out.weight, latte.proj_out.bias):
            nn.init.zeros_(p)
        for block in (*latte.transformer_blocks, *latte.temporal_transformer_blocks):
            nn.init.zeros_(block.scale_shift_table)
            if getattr(block, "attn2", None) is not None:  # the ungated cross-attention starts at zero too
                nn.init.zeros_(block.attn2.to_out[0].weight)
                nn.init.zeros_(block.attn2.to_out[0].bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Optional[Cond] = None) -> torch.Tensor:
        b, _, frames = x_t.shape[:3]
        if frames != self.num_frames:
            raise ValueError(f"the DiT was built for {self.num_frames} frames, got {frames}")
        t = t.expand(b) if t.dim() == 0 else t
        timestep = t
        class_labels = label_ids(cond, self.num_classes, b, x_t.device)
        if class_labels is not None:
            timestep = torch.stack([t.float(), class_labels.float()], dim=1)  # (B, 2), see TimestepClassEmbedding
        x = fold_tubelets(x_t, self.temporal_patch_size)  # (B, C*pt, T/pt, H, W)
        text, bias = x.new_zeros(b, 1, 1), None  # without text Latte still projects a caption; nothing reads it
        if self.text_dim:
            if cond is None or cond.text_embeds is None:
                raise ValueError("this DiT is text-conditioned: pass a Cond with text states")
            text = cond.text_states().to(x.dtype)                     # (B, L, D)
            mask = cond.attention_mask()
            if mask is not None:  # (B, L) -> a bias per token for each frame-slot's spatial block, (B*T', 1, L)
                bias = ((1 - mask.to(x.dtype)) * -10000.0).repeat_interleave(x.shape[2], dim=0).unsqueeze(1)
        out = self.latte(x, timestep=timestep, encoder_hidden_states=text, encoder_attention_mask=bias,
                         return_dict=False)[0]
        return unfold_tubelets(out, self.temporal_patch_size)

    def parameter_counts(self) -> dict:
        """Trainable/frozen counts of the whole model and of its spatial / temporal blocks."""
        return {"all": count_parameters(self), "spatial": count_parameters(self.latte.transformer_blocks),
                "temporal": count_parameters(self.latte.temporal_transformer_blocks)}

    # ---- registry protocol ---------------------------------------------------------------------
    @classmethod
    def build(cls, cfg, spec: ModelSpec) -> "SpacetimeDiT":
        dcfg = cfg.model.dit
        hidden, depth, heads = dit_dims(dcfg)
        text_dim = int(spec.base.get("text_dim", 0)) if spec.base.get("text") else 0
        return cls(spec.in_channels, spec.sample_size, spec.num_frames, spec.num_classes, hidden, depth, heads,
                   int(dcfg.patch_size), int(dcfg.temporal_patch_size), text_dim)

    def pipeline_components(self) -> dict:
        return {"denoiser": self}

    @classmethod
    def from_pipeline_components(cls, components: dict, spec: ModelSpec) -> "SpacetimeDiT":
        return components["denoiser"]


def dit_dims(dcfg) -> tuple[int, int, int]:
    """(hidden_size, depth, num_heads) from ``model.dit``: the size preset, custom values > 0 win."""
    if dcfg.size not in DIT_SIZES:
        raise ValueError(f"model.dit.size is '{dcfg.size}'; expected one of {', '.join(DIT_SIZES)}")
    preset = DIT_SIZES[dcfg.size]
    custom = (dcfg.hidden_size, dcfg.depth, dcfg.num_heads)
    return tuple(c if c > 0 else p for c, p in zip(custom, preset))  # type: ignore[return-value]


