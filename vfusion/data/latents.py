"""Video <-> VAE latents with a local diffusers ``AutoencoderKL`` (latent video diffusion).

Frames are folded into the batch (``vfusion.layout.fold_frames``), encoded one
image at a time by the 2D VAE and unfolded again, so a clip ``(B, 3, T, H, W)`` in
[-1, 1] becomes latents ``(B, c, T, H/f, W/f)``. Encoding is deterministic: the
posterior mode (= mean of the diagonal Gaussian), shifted by the VAE's
``shift_factor`` when it has one and multiplied by ``scaling_factor`` (Stable
Diffusion: 0.18215), as in latent diffusion (Rombach et al., 2022).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

from vfusion.data.errors import DatasetError
from vfusion.layout import fold_frames, unfold_frames


def vae_dir(vae_path: str | Path) -> tuple[Path, Optional[str]]:
    """``(directory, subfolder)`` of an AutoencoderKL: a model dir, or a pipeline dir with ``vae/``."""
    path = Path(vae_path).expanduser()
    if (path / "config.json").is_file():
        return path, None
    if (path / "vae" / "config.json").is_file():
        return path, "vae"
    raise DatasetError(f"data.vae_path '{path}' is not a diffusers AutoencoderKL directory (no config.json, "
                       f"nor vae/config.json); write one with AutoencoderKL.save_pretrained(PATH)")


def latent_geometry(vae_config) -> tuple[int, int]:
    """``(latent channels, down-sampling factor)`` of an AutoencoderKL, from its config alone: a loaded
    config, or a folder whose ``config.json`` is read without loading any weights."""
    if isinstance(vae_config, (str, Path)):
        import json

        path, subfolder = vae_dir(vae_config)
        vae_config = json.loads((path / (subfolder or "") / "config.json").read_text())
    get = vae_config.get if isinstance(vae_config, dict) else lambda k: getattr(vae_config, k)
    return int(get("latent_channels")), 2 ** (len(get("block_out_channels")) - 1)


class LatentCodec(nn.Module):
    """``encode``: video in [-1, 1] -> scaled latents; ``decode``: latents -> video in [-1, 1].

    The VAE is frozen (eval mode, no gradients). ``max_frames`` bounds how many
    frames go through the VAE in one call.
    """

    def __init__(self, vae_path: str | Path | nn.Module, scaling_factor: Optional[float] = None, max_frames: int = 64):
        """``vae_path``: a local AutoencoderKL folder (or pipeline folder with ``vae/``), or the VAE itself."""
        super().__init__()
        if isinstance(vae_path, nn.Module):
            self.vae = vae_path
        else:
            from diffusers import AutoencoderKL

            path, subfolder = vae_dir(vae_path)
            try:
                self.vae = AutoencoderKL.from_pretrained(path, subfolder=subfolder, low_cpu_mem_usage=False)
            except (OSError, ValueError) as err:
                raise DatasetError(f"cannot load the AutoencoderKL at '{vae_path}': {err}") from err
        self.vae.requires_grad_(False).eval()
        cfg = self.vae.config
        self.scaling_factor = float(scaling_factor if scaling_factor is not None else cfg.scaling_factor)
        self.shift_factor = float(getattr(cfg, "shift_factor", None) or 0.0)
        self.latent_channels, self.downsample = latent_geometry(cfg)
        self.max_frames = max_frames

    def train(self, mode: bool = True) -> "LatentCodec":   # the VAE always stays in eval mode
        super().train(mode)
        self.vae.eval()
        return self

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    def latent_shape(self, num_frames: int, resolution: int) -> tuple[int, int, int, int]:
        """``(c, T, h, w)`` of the latents of one clip."""
        side = resolution // self.downsample
        return (self.latent_channels, num_frames, side, side)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` in [-1, 1] -> ``(B, c, T, h, w)`` scaled latents (posterior mode)."""
        if video.dim() != 5:
            raise ValueError(f"expected a video batch (B, C, T, H, W), got shape {tuple(video.shape)}")
        t = video.shape[2]
        frames = fold_frames(video).to(self.device, self.dtype)                   # (B*T, 3, H, W)
        out = [self.vae.encode(chunk).latent_dist.mode() for chunk in frames.split(self.max_frames)]
        z = (torch.cat(out) - self.shift_factor) * self.scaling_factor            # (B*T, c, h, w)
        return unfold_frames(z.float(), t)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, c, T, h, w)`` scaled latents -> ``(B, 3, T, H, W)`` video clamped to [-1, 1]."""
        if latents.dim() != 5:
            raise ValueError(f"expected latents (B, c, T, h, w), got shape {tuple(latents.shape)}")
        t = latents.shape[2]
        z = fold_frames(latents).to(self.device, self.dtype) / self.scaling_factor + self.shift_factor
        out = [self.vae.decode(chunk).sample for chunk in z.split(self.max_frames)]
        return unfold_frames(torch.cat(out).float().clamp(-1, 1), t)
