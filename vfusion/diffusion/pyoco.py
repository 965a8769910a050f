"""PYoCo's correlated video-noise priors (Ge et al., "Preserve Your Own Correlation", ICCV 2023).

With a = α / sqrt(1 + α²) and c = 1 / sqrt(1 + α²) (so a² + c² = 1) and z^i, s ~ N(0, I):

    mixed        ε^i = a·s + c·z^i                          ρ_ij = a² = α² / (1 + α²)   (i ≠ j)
    progressive  ε^0 = a·s + c·z^0,  ε^i = a·ε^{i−1} + c·z^i    ρ_ij = a^|i−j|          (an AR(1) chain)

Mixed is PYoCo's ε_shared + ε_ind^i, ε_shared = a·s ~ N(0, α²/(1+α²)·I), ε_ind^i = c·z^i ~ N(0, 1/(1+α²)·I). The
progressive chain starts one step after a state s ~ N(0, I), so ε^0 ~ N(0, I) as in PYoCo and the chain is
stationary. Every frame is N(0, I) and none is special (unlike VideoFusion's keyframe), so neither prior can drive
VideoFusion's base generator. The draws are every prior's (:func:`vfusion.diffusion.noise.draw`); with α = 0 both
priors return z itself: the ``independent`` prior bit for bit, with the generator left in the same state.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from vfusion.diffusion.noise import NoisePrior, NoisePriorError, NoiseSample, draw


def check_alpha(alpha: float, prior: str) -> float:
    """α as a float, or a :class:`NoisePriorError` unless it is finite and >= 0."""
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise NoisePriorError(f"noise.alpha of prior '{prior}' must be a number >= 0, got {alpha!r}") from None
    if not math.isfinite(alpha) or alpha < 0:
        raise NoisePriorError(f"noise.alpha of prior '{prior}' must be a finite number >= 0, got {alpha}")
    return alpha


class _PyocoNoise(NoisePrior):
    name = ""

    def __init__(self, num_frames: int, alpha: float):
        if num_frames < 1:
            raise NoisePriorError(f"num_frames must be >= 1, got {num_frames}")
        self.num_frames = int(num_frames)
        self.alpha = check_alpha(alpha, self.name)
        # a = α / sqrt(1 + α²), c = 1 / sqrt(1 + α²): exactly 0 and 1 at α = 0
        self.shared_coef = self.alpha / math.sqrt(1.0 + self.alpha ** 2)
        self.own_coef = 1.0 / math.sqrt(1.0 + self.alpha ** 2)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_frames={self.num_frames}, alpha={self.alpha:g})"


class PyocoMixedNoise(_PyocoNoise):
    """ε^i = a·s + c·z^i: one shared part for every frame. ``base`` is s (B, C, 1, H, W), ``residual`` z."""

    name = "pyoco_mixed"

    def sample(self, shape: Sequence[int], generator: Optional[torch.Generator] = None,
               device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
               level=None) -> NoiseSample:
        z, s = draw(self._check_shape(shape), generator, device, dtype)
        eps = z if self.alpha == 0.0 else self.own_coef * z + self.shared_coef * s
        return NoiseSample(eps=eps, base=s, residual=z)

    def correlation(self, level: Optional[float] = None) -> torch.Tensor:
        corr = torch.full((self.num_frames, self.num_frames), self.shared_coef ** 2, dtype=torch.float64)
        corr.fill_diagonal_(1.0)
        return corr


class PyocoProgressiveNoise(_PyocoNoise):
    """ε^i = a·ε^{i−1} + c·z^i from ε^{−1} = s. ``base`` is None; ``residual`` is z (the innovations)."""

    name = "pyoco_progressive"

    def sample(self, shape: Sequence[int], generator: Optional[torch.Generator] = None,
               device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
               level=None) -> NoiseSample:
        shape = self._check_shape(shape)
        z, s = draw(shape, generator, device, dtype)
        if self.alpha == 0.0:
            return NoiseSample(eps=z, base=None, residual=z)
        prev, frames = s[:, :, 0], []
        for i in range(shape[2]):
            prev = self.shared_coef * prev + self.own_coef * z[:, :, i]
            frames.append(prev)
        return NoiseSample(eps=torch.stack(frames, dim=2), base=None, residual=z)

    def correlation(self, level: Optional[float] = None) -> torch.Tensor:
        powers = torch.tensor([self.shared_coef ** d for d in range(self.num_frames)], dtype=torch.float64)
        idx = torch.arange(self.num_frames)
        return powers[(idx[:, None] - idx[None, :]).abs()]  # ρ^|i−j|, exactly symmetric with a unit diagonal


def _alpha(name: str, alpha: Optional[float]) -> float:
    from vfusion.diffusion.priors import ALPHA_PRIORS

    return ALPHA_PRIORS[name] if alpha is None else alpha


def mixed_prior(num_frames: int, alpha: Optional[float] = None, **unused) -> PyocoMixedNoise:
    """PYoCo's mixed prior (``noise.alpha``; unset: 1, PYoCo's reported default, unverified)."""
    return PyocoMixedNoise(num_frames, _alpha("pyoco_mixed", alpha))


def progressive_prior(num_frames: int, alpha: Optional[float] = None, **unused) -> PyocoProgressiveNoise:
    """PYoCo's progressive prior (``noise.alpha``; unset: 2, PYoCo's reported default, unverified)."""
    return PyocoProgressiveNoise(num_frames, _alpha("pyoco_progressive", alpha))
