"""What a model needs to know about the data and the diffusion process.

Every model in :mod:`vfusion.models` is a plain ``nn.Module`` with

    forward(x_t: (B, C, T, H, W), t: (B,) long, class_labels: (B,) long | None) -> eps_hat (B, C, T, H, W)

Class labels run over ``0 .. num_classes``; the value ``num_classes`` means "no
label" (classifier-free guidance). With ``num_classes == 0`` labels are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ModelSpec:
    in_channels: int          # 3 for pixels, the VAE's latent channels for latents
    sample_size: int          # spatial size H = W the model sees
    num_frames: int
    num_classes: int          # 0: unconditional
    lambdas: torch.Tensor     # (T,) the λ schedule of the decomposed noise (VideoFusion uses it)
    alphas_cumprod: torch.Tensor  # (num_train_timesteps,) from the diffusers scheduler

    @property
    def num_class_embeds(self) -> int | None:
        """Embedding entries incl. the null label, or None when unconditional."""
        return self.num_classes + 1 if self.num_classes > 0 else None

    def null_labels(self, batch: int, device=None) -> torch.Tensor:
        return torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
