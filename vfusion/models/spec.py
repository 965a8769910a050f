"""What a model needs to know about the data and the diffusion process.

Every model in :mod:`vfusion.models` is an ``nn.Module`` with

    forward(x_t: (B, C, T, H, W), t: (B,) long, cond: Cond | None) -> prediction (B, C, T, H, W)

where the prediction is the process's target (ε, v or x, ``process.prediction_type``)
and ``cond`` is a :class:`vfusion.conditioning.Cond` (None: unconditional). Class label
tables have ``num_classes + 1`` entries; the last is the null label (classifier-free
guidance), filled in by ``Cond.label_ids``. With ``num_classes == 0`` labels are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelSpec:
    in_channels: int          # 3 for pixels, the VAE's latent channels for latents
    sample_size: int          # spatial size H = W the model sees
    num_frames: int
    num_classes: int          # 0: unconditional
    process: Any = None       # the DiffusionProcess (VideoFusion converts through it)
    noise: Any = None         # the noise prior (VideoFusion reads its per-frame λ)
    # how the base generator calls its image model (vfusion.backbones.adopt.base_facts): family,
    # text (+ text_dim, prompts), class_ids; {} for the project's own fresh UNet
    base: dict = field(default_factory=dict)

    @property
    def num_class_embeds(self) -> int | None:
        """Embedding entries incl. the null label, or None when unconditional."""
        return self.num_classes + 1 if self.num_classes > 0 else None

    def data_facts(self) -> dict:
        return {"in_channels": self.in_channels, "sample_size": self.sample_size, "num_frames": self.num_frames,
                "num_classes": self.num_classes}

