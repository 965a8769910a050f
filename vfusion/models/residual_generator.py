"""Residual generator ψ (VideoFusion, method.md step 3): r̂^i = ψ(z'^i_t, t, i [, class]).

A small diffusers 2D UNet applied to every non-key frame folded into the batch. It must know which frame it is
denoising, so the frame index and, for class-conditional data, the class enter through the UNet's "identity" class
embedding: their learned embeddings are summed and added to the time embedding. With a text-conditioned base
(``text_dim > 0``) ψ gets the base's text condition instead, the mean of the text states (over the tokens the mask
keeps) through a linear layer added to the same embedding, starting at zero so a fresh ψ is text-agnostic. Not its
own cross-attention, on purpose: ψ's per-frame cost is what VideoFusion saves, and the base's cross-attention has
already put the prompt's content into b̂, which ψ only refines per frame; a pooled vector costs one matrix product
per clip. Temporal layers (``model.residual.temporal: none | conv | attention``, default none) start at zero, so a
fresh ψ with them is bit for bit the per-frame ψ and the switch can be ablated cleanly; where they go and why the
bottleneck by default: :class:`ResidualGenerator`.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Optional, Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from vfusion.conditioning import Cond, label_ids
from vfusion.config import ConfigError
from vfusion.models.shapes import level_sizes
from vfusion.layout import fold_frames, unfold_frames
from vfusion.models.temporal import (TemporalCheckpointing, TemporalHook, TemporalMixer, mixing_frames,
                                     spatial_units_with_levels)
from vfusion.models.unet2d import build_unet, time_embed_dim, unet_forward


# ``model.residual.temporal``: kinds of temporal layer ψ can have ("none": per-frame ψ)
RESIDUAL_TEMPORAL = ("none", "conv", "attention")


class ResidualGenerator(TemporalCheckpointing, ModelMixin, ConfigMixin):
    """ψ on the non-key frames ``(B, C, T', H, W)``; its temporal layers, when on, are
    :class:`~vfusion.models.temporal.TemporalMixer` s run by :class:`~vfusion.models.temporal.TemporalHook` s.

    Placement (``model.residual.temporal_resolutions``): by default one after the UNet's mid block; given
    feature-map sizes, one after every spatial unit (resnet) of the levels of those sizes, as the video UNet places
    them. Why the bottleneck by default: ψ's per-frame cost is what VideoFusion saves (method.md, "Cost structure").
    Counted with ``FlopCounterMode`` (forward, 32x32 frames, 15 non-key frames), one mixer at the bottleneck adds
    1.3 % (conv) / 2.4 % (attention) to ψ's per-frame FLOPs at the default widths [16, 32, 32] (1 resnet per level),
    where one after each of its 11 spatial units would add 37 % / 68 %; at [32, 64, 64] with 2 resnets per level:
    0.9 % / 1.6 % against 42 % / 77 % (17 units). The bottleneck is also where mixing is cheapest per unit of
    context: each of its positions sees a large patch of the frame, the scale of the motion ψ has to keep
    consistent, while the content the frames share is already in the base's b̂. Whether ψ needs its neighbours at
    all is the question the ablation answers (the main job's measurement: experiments/results/main_job/README.md).

    The temporal layers see the T-1 non-key frames as one sequence: the keyframe's neighbours k-1 and k+1 are
    adjacent for the conv kernel and the attention's sinusoidal positions; each frame's true index still enters
    through the frame embedding.
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, sample_size: int = 32, num_frames: int = 16, num_classes: int = 0,
                 frame_embed_dim: int = 64, temporal: str = "none", temporal_heads: int = 4, arch: str = "unet2d",
                 block_out_channels: Sequence[int] = (16, 32, 32), layers_per_block: int = 1,
                 attention: bool = False, norm_num_groups: int = 8, text_dim: int = 0,
                 attention_resolutions: Optional[Sequence[int]] = None,
                 temporal_resolutions: Optional[Sequence[int]] = None):
        super().__init__()
        if temporal not in RESIDUAL_TEMPORAL:
            raise ValueError(f"model.residual.temporal is '{temporal}'; expected one of {', '.join(RESIDUAL_TEMPORAL)}")
        unet_cfg = SimpleNamespace(arch=arch, block_out_channels=list(block_out_channels),
                                   layers_per_block=layers_per_block, attention=attention,
                                   attention_resolutions=attention_resolutions, norm_num_groups=norm_num_groups)
        self.unet = build_unet(unet_cfg, in_channels, in_channels, sample_size, class_embed_type="identity")
        self.num_frames = num_frames
        self.num_classes = num_classes
        emb = time_embed_dim(self.unet)
        self.frame_embed = nn.Sequential(nn.Embedding(num_frames, frame_embed_dim), nn.SiLU(),
                                         nn.Linear(frame_embed_dim, emb))
        self.class_embed = nn.Embedding(num_classes + 1, emb) if num_classes > 0 and not text_dim else None
        self.text_proj = nn.Linear(text_dim, emb) if text_dim else None
        if self.text_proj is not None:
            nn.init.zeros_(self.text_proj.weight)
            nn.init.zeros_(self.text_proj.bias)
        # not "temporal": a submodule named like a config key would be shadowed by it (ModelMixin.__getattr__)
        self.temporal_layers = nn.ModuleList()
        if temporal != "none":
            if temporal_resolutions is None:   # one layer, after the middle block
                places = [(self.unet.mid_block, int(block_out_channels[-1]))]
            else:                              # after every spatial unit of the levels of those sizes
                sizes = level_sizes(temporal_resolutions, len(block_out_channels), sample_size,
                                    "model.residual.temporal_resolutions")
                places = [(unit, channels) for _, unit, channels, level in spatial_units_with_levels(self.unet)
                          if sample_size // 2 ** level in sizes]
            for unit, channels in places:
                mixer = TemporalMixer(channels, temporal, temporal_heads, norm_num_groups, max(32, num_frames),
                                      heads_key="model.residual.temporal_heads")
                hook = TemporalHook(mixer)
                unit.register_forward_hook(hook)
                self.temporal_layers.append(hook)

    @classmethod
    def from_experiment(cls, res_cfg, spec) -> "ResidualGenerator":
        """From the ``model.residual`` section and the data facts."""
        text_dim = int(spec.base.get("text_dim", 0)) if spec.base.get("text") else 0
        return cls(in_channels=spec.in_channels, sample_size=spec.sample_size, num_frames=spec.num_frames,
                   num_classes=spec.num_classes, text_dim=text_dim, frame_embed_dim=int(res_cfg.frame_embed_dim),
                   temporal=temporal_kind(res_cfg), temporal_heads=int(res_cfg.temporal_heads), arch=res_cfg.arch,
                   block_out_channels=[int(c) for c in res_cfg.block_out_channels],
                   layers_per_block=int(res_cfg.layers_per_block), attention=bool(res_cfg.attention),
                   norm_num_groups=int(res_cfg.norm_num_groups),
                   attention_resolutions=_sizes(res_cfg.get("attention_resolutions")),
                   temporal_resolutions=_sizes(res_cfg.get("temporal_resolutions")))

    def forward(self, z: torch.Tensor, t: torch.Tensor, frame_index: torch.Tensor,
                cond: Optional[Cond] = None) -> torch.Tensor:
        """``z``: (B, C, T', H, W) frames with indices ``frame_index`` (T',) -> r̂ of the same shape."""
        b, _, tp, _, _ = z.shape
        idx = frame_index.to(z.device).repeat(b)                      # (B*T',) frame fastest
        emb = self.frame_embed(idx)                                   # (B*T', E)
        if self.class_embed is not None:
            labels = label_ids(cond, self.num_classes, b, z.device)
            emb = emb + self.class_embed(labels).repeat_interleave(tp, dim=0)
        if self.text_proj is not None:
            states = cond.text_states() if cond is not None else None
            if states is None:
                raise ValueError("the residual generator is text-conditioned but the condition has no text states")
            mask = cond.attention_mask()
            w = mask.to(states.dtype).unsqueeze(-1) if mask is not None else torch.ones_like(states[..., :1])
            pooled = (states * w).sum(1) / w.sum(1).clamp(min=1)                 # (B, D)
            emb = emb + self.text_proj(pooled.to(emb.dtype)).repeat_interleave(tp, dim=0)
        with mixing_frames(self.temporal_layers, tp):
            out = unet_forward(self.unet, fold_frames(z), t.repeat_interleave(tp), emb.to(z.dtype))
        return unfold_frames(out, tp)


def _sizes(value) -> Optional[list[int]]:
    return None if value is None else [int(v) for v in value]


def temporal_kind(res_cfg) -> str:
    """``model.residual.temporal``, with ``temporal_mixing: true`` (the same switch under another name) read as
    ``conv``."""
    kind = str(res_cfg.temporal)
    if kind not in RESIDUAL_TEMPORAL:
        raise ConfigError(f"config key 'model.residual.temporal' is '{kind}'; expected one of "
                          f"{', '.join(RESIDUAL_TEMPORAL)}")
    if res_cfg.get("temporal_mixing"):
        if kind == "attention":
            raise ConfigError("config keys 'model.residual.temporal_mixing: true' (the old name of temporal: conv) "
                              "and 'model.residual.temporal: attention' disagree; drop temporal_mixing")
        kind = "conv"
    return kind
