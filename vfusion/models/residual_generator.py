"""Residual generator ψ (VideoFusion, method.md step 3).

A small diffusers 2D UNet applied to every non-key frame folded into the batch,
conditioned on the timestep AND the frame index (it must know which frame it is
denoising) and, for class-conditional data, on the class:

    r̂^i = ψ(z'^i_t, t, i [, class])

Frame index and class enter through the UNet's "identity" class embedding: their
learned embeddings are summed and added to the UNet's time embedding.

With a text-conditioned base (``text_dim > 0``) ψ gets the same text condition as the base,
as the mean of the text states (over the tokens the mask keeps) through a linear layer added
to the same embedding, instead of a class embedding. Not its own cross-attention, on purpose:
ψ runs on every non-key frame, so its per-frame cost is what VideoFusion saves, and the
base's cross-attention has already put the prompt's content into b̂, which ψ only refines
per frame; a pooled vector costs one matrix product per clip. The projection starts at zero,
so a fresh ψ starts text-agnostic.

Optional temporal mixing (``temporal_mixing: true``): a zero-initialised temporal
convolution over the frame axis at the UNet's bottleneck (a forward hook on its
mid block, :class:`vfusion.models.temporal.TemporalConvMixer`), so at initialisation
ψ is exactly per-frame and the switch can be ablated cleanly. Off by default.

It is a diffusers ``ModelMixin``: ``save_pretrained`` / ``from_pretrained`` write and read
it as a pipeline component (config.json + safetensors), built from its config alone.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Optional, Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from vfusion.conditioning import Cond, label_ids
from vfusion.layout import fold_frames, unfold_frames
from vfusion.models.temporal import TemporalConvMixer
from vfusion.models.unet2d import build_unet, time_embed_dim, unet_forward


class ResidualGenerator(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, in_channels: int = 3, sample_size: int = 32, num_frames: int = 16, num_classes: int = 0,
                 frame_embed_dim: int = 64, temporal_mixing: bool = False, arch: str = "unet2d",
                 block_out_channels: Sequence[int] = (16, 32, 32), layers_per_block: int = 1,
                 attention: bool = False, norm_num_groups: int = 8, text_dim: int = 0):
        super().__init__()
        unet_cfg = SimpleNamespace(arch=arch, block_out_channels=list(block_out_channels),
                                   layers_per_block=layers_per_block, attention=attention,
                                   norm_num_groups=norm_num_groups)
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
        self.mixer: Optional[TemporalConvMixer] = None
        if temporal_mixing:
            if getattr(self.unet, "mid_block", None) is None:
                raise ValueError("temporal_mixing needs a UNet with a mid block")
            self.mixer = TemporalConvMixer(self.unet.config.block_out_channels[-1])
            self.unet.mid_block.register_forward_hook(lambda _m, _inp, out: self.mixer(out))

    @classmethod
    def from_experiment(cls, res_cfg, spec) -> "ResidualGenerator":
        """From the ``model.residual`` section and the data facts."""
        text_dim = int(spec.base.get("text_dim", 0)) if spec.base.get("text") else 0
        return cls(in_channels=spec.in_channels, sample_size=spec.sample_size, num_frames=spec.num_frames,
                   num_classes=spec.num_classes, text_dim=text_dim, frame_embed_dim=int(res_cfg.frame_embed_dim),
                   temporal_mixing=bool(res_cfg.temporal_mixing), arch=res_cfg.arch,
                   block_out_channels=[int(c) for c in res_cfg.block_out_channels],
                   layers_per_block=int(res_cfg.layers_per_block), attention=bool(res_cfg.attention),
                   norm_num_groups=int(res_cfg.norm_num_groups))

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
        if self.mixer is not None:
            self.mixer.num_frames = tp
        out = unet_forward(self.unet, fold_frames(z), t.repeat_interleave(tp), emb.to(z.dtype))
        return unfold_frames(out, tp)
