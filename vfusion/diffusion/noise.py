"""Decomposed noise (VideoFusion, Luo et al. CVPR 2023, eq. for ε^i), and what every noise prior shares.

For a clip of T frames with keyframe k = T // 2 and a per-frame share λ^i ∈ [0, 1] (λ^k = 1):

    ε^i = sqrt(λ^i) · b + sqrt(1 − λ^i) · r^i,      b, r^i ~ N(0, I) independent

``b`` has one frame's shape and is shared by every frame; ``r^i`` is drawn per frame. Every ε^i is N(0, I) and
Cov(ε^i, ε^j) = sqrt(λ^i λ^j) I for i ≠ j. Every prior draws in the same order (:func:`draw`), so at zero
correlation each is the ``independent`` prior bit for bit, generator state included, over all the draws of a
sampling loop: the independent-noise baselines are the λ = 0 case of this code, not a copy of it. λ may move with
the noise level (:class:`DecomposedNoise`); the keyframe keeps λ = 1 at every level. The PYoCo priors are in
:mod:`vfusion.diffusion.pyoco`. Everything here is a pure function of its inputs (plus an explicit generator).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from vfusion.diffusion.priors import LAMBDA_SCHEDULES as SCHEDULES
from vfusion.errors import UserError
from vfusion.layout import keyframe_index


class NoisePriorError(UserError, ValueError):
    """A noise prior that cannot be built or used as asked."""


class LambdaScheduleError(NoisePriorError):
    """An invalid λ schedule."""


def lambda_schedule(num_frames: int, schedule: str = "constant", value: float = 0.5, min_value: float = 0.0,
                    rate: float = 0.7, values: Optional[Sequence[float]] = None) -> torch.Tensor:
    """Per-frame λ as a float64 tensor of shape ``(T,)`` with λ[T // 2] = 1.

    - ``constant``: λ = ``value`` for every non-key frame (the paper's setting).
    - ``linear`` / ``cosine``: λ falls from ``value`` at distance 1 from the keyframe to
      ``min_value`` at the largest distance, linearly or along a half cosine.
    - ``exponential``: λ = ``value`` · ``rate`` ^ (d − 1) at distance d.
    - ``list``: ``values`` given explicitly, one per frame.
    """
    if num_frames < 1:
        raise LambdaScheduleError(f"num_frames must be >= 1, got {num_frames}")
    if schedule not in SCHEDULES:
        raise LambdaScheduleError(f"unknown λ schedule '{schedule}'; expected one of {', '.join(SCHEDULES)}")
    k = keyframe_index(num_frames)
    if schedule == "list":
        if values is None:
            raise LambdaScheduleError("λ schedule 'list' needs 'values' (one λ per frame)")
        lam = torch.tensor([float(v) for v in values], dtype=torch.float64)
        if lam.numel() != num_frames:
            raise LambdaScheduleError(f"λ list has {lam.numel()} values but the clip has {num_frames} frames")
    else:
        for name, v in (("value", value), ("min_value", min_value)):
            if not 0.0 <= v <= 1.0:
                raise LambdaScheduleError(f"λ {name}={v} is outside [0, 1]")
        if schedule == "exponential" and not 0.0 <= rate <= 1.0:
            raise LambdaScheduleError(f"λ rate={rate} is outside [0, 1]")
        dist = (torch.arange(num_frames, dtype=torch.float64) - k).abs()
        d_max = float(dist.max()) if num_frames > 1 else 1.0
        frac = (dist - 1).clamp(min=0) / max(d_max - 1.0, 1.0)  # 0 at distance 1, 1 at the largest distance
        if schedule == "constant":
            lam = torch.full((num_frames,), float(value), dtype=torch.float64)
        elif schedule == "linear":
            lam = value + (min_value - value) * frac
        elif schedule == "cosine":
            lam = min_value + (value - min_value) * 0.5 * (1.0 + torch.cos(math.pi * frac))
        else:  # exponential
            lam = value * rate ** (dist - 1).clamp(min=0)
        lam[k] = 1.0
    check_lambdas(lam)
    return lam


def check_lambdas(lam: torch.Tensor) -> None:
    """Raise :class:`LambdaScheduleError` unless λ ∈ [0, 1] everywhere and λ[T // 2] = 1."""
    if lam.dim() != 1:
        raise LambdaScheduleError(f"λ must be a 1-D per-frame vector, got shape {tuple(lam.shape)}")
    if not torch.isfinite(lam).all():
        raise LambdaScheduleError(f"λ contains non-finite values: {lam.tolist()}")
    bad = [(i, float(v)) for i, v in enumerate(lam) if not 0.0 <= float(v) <= 1.0]
    if bad:
        raise LambdaScheduleError(f"λ values outside [0, 1] at frames {bad}")
    k = keyframe_index(lam.numel())
    if abs(float(lam[k]) - 1.0) > 1e-12:
        raise LambdaScheduleError(f"the keyframe (index {k} = T // 2) must have λ = 1, got {float(lam[k])}")


def compose(base: torch.Tensor, residual: torch.Tensor, lambdas: torch.Tensor) -> torch.Tensor:
    """ε = sqrt(λ)·base + sqrt(1−λ)·residual, per frame.

    ``base``: ``(B, C, 1, H, W)`` (broadcast over frames) or ``(B, C, T, H, W)``;
    ``residual``: ``(B, C, T, H, W)``; ``lambdas``: ``(T,)``, or ``(B, T)`` (one λ per sample), cast to
    ``residual``'s dtype; or a tensor already broadcastable to ``residual``, used as it is (the denoiser's
    λ, whose dtype may differ from a network output's under autocast).
    """
    if lambdas.dim() > 2:
        lam = lambdas
    else:
        lam = lambdas.to(device=residual.device, dtype=residual.dtype)
        lam = lam.view(1, 1, -1, 1, 1) if lam.dim() == 1 else lam.view(lam.shape[0], 1, lam.shape[1], 1, 1)
    return lam.sqrt() * base + (1.0 - lam).sqrt() * residual


def lambdas_at_level(lambdas_0: torch.Tensor, lambdas_T: torch.Tensor, level) -> torch.Tensor:
    """λ(u) = λ_0 + u·(λ_T − λ_0): λ at noise level u ∈ [0, 1] of a time-dependent prior, in the inputs'
    dtype and broadcast shape (the prior's draws and VideoFusion's composition read the same λ)."""
    return lambdas_0 + level * (lambdas_T - lambdas_0)


@dataclass(frozen=True)
class NoiseSample:
    """One draw of a noise prior. ``eps`` is the noise; ``base`` / ``residual`` are its parts where the
    prior has them (``eps = sqrt(λ)·base + sqrt(1 − λ)·residual`` for the decomposed prior), else None."""

    eps: torch.Tensor                 # (B, C, T, H, W)
    base: Optional[torch.Tensor]      # (B, C, 1, H, W): the part shared by every frame
    residual: Optional[torch.Tensor]  # (B, C, T, H, W): the per-frame part

    def __iter__(self):  # allows ``eps, base, residual = noise.sample(...)``
        return iter((self.eps, self.base, self.residual))


class NoisePrior:
    """What every noise prior offers: ``sample`` -> :class:`NoiseSample`, ``__call__`` -> ε alone (the
    noise sampler the sampling loop calls), ``correlation()`` and ``num_frames``."""

    num_frames: int
    # True when the frame correlation depends on the noise level (sample and correlation take ``level``)
    time_dependent: bool = False

    def sample(self, shape: Sequence[int], generator: Optional[torch.Generator] = None,
               device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
               level=None) -> NoiseSample:
        """``level``: the normalised noise level u in [0, 1] (a float or one per sample, ``(B,)``) the
        noise is drawn for; only a time-dependent prior reads it."""
        raise NotImplementedError

    def correlation(self, level: Optional[float] = None) -> torch.Tensor:
        """The theoretical frame-by-frame correlation matrix, ``(T, T)`` float64 (at noise level ``level``
        for a time-dependent prior)."""
        raise NotImplementedError

    def __call__(self, shape: Sequence[int], generator: Optional[torch.Generator] = None,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                 level=None) -> torch.Tensor:
        """Just ``eps`` (a noise sampler callable for the schedulers)."""
        return self.sample(shape, generator=generator, device=device, dtype=dtype, level=level).eps

    def _check_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        if len(shape) != 5:
            raise ValueError(f"shape must be (B, C, T, H, W), got {tuple(shape)}")
        if shape[2] != self.num_frames:
            raise ValueError(f"shape has {shape[2]} frames but the {type(self).__name__} prior has {self.num_frames}")
        return tuple(int(v) for v in shape)


def _device(device, generator):
    return generator.device if device is None and generator is not None else device


def draw(shape: Sequence[int], generator, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The two draws every prior makes, in this order: ``z`` of ``shape`` (B, C, T, H, W), then ``s`` of one
    frame's shape (B, C, 1, H, W)."""
    b, c, _, h, w = shape
    device = _device(device, generator)
    z = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    s = torch.randn((b, c, 1, h, w), generator=generator, device=device, dtype=dtype)
    return z, s


class IndependentNoise(NoisePrior):
    """I.i.d. per-frame noise: ε is ``torch.randn(shape, generator=g)`` bit for bit.

    The second, one-frame draw of :func:`draw` is made and unused, so this prior is bit for bit the
    decomposed prior at λ ≡ 0, and the other priors at zero correlation leave the generator where this
    one does.
    ``base`` is None and ``residual`` is ε itself (all of it is per-frame)."""

    def __init__(self, num_frames: int):
        if num_frames < 1:
            raise NoisePriorError(f"num_frames must be >= 1, got {num_frames}")
        self.num_frames = int(num_frames)

    def sample(self, shape: Sequence[int], generator: Optional[torch.Generator] = None,
               device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
               level=None) -> NoiseSample:
        eps, _ = draw(self._check_shape(shape), generator, device, dtype)
        return NoiseSample(eps=eps, base=None, residual=eps)

    def correlation(self, level: Optional[float] = None) -> torch.Tensor:
        return torch.eye(self.num_frames, dtype=torch.float64)

    def __repr__(self) -> str:
        return f"IndependentNoise(num_frames={self.num_frames})"


class DecomposedNoise(NoisePrior):
    """Sampler of decomposed video noise for a fixed λ schedule and frame count.

    >>> noise = DecomposedNoise.constant(16, 0.5)
    >>> eps, base, residual = noise.sample((2, 3, 16, 32, 32))

    ``lambdas_T``: λ at the noisiest level t = T (each any per-frame schedule); λ then moves linearly with the
    noise level, λ(u) = (1 − u)·λ_0 + u·λ_T with u = ``process.noise_level(t)`` ∈ [0, 1], the keyframe keeping
    λ = 1, and ``sample`` / ``correlation`` need ``level``. Every caller that draws noise for a known level passes
    it (``sample(..., level=u)``): training at each sample's t, sampling at the first timestep, the fresh noise of
    a stochastic step at the level it is added to.
    """

    def __init__(self, lambdas: Sequence[float] | torch.Tensor,
                 lambdas_T: Optional[Sequence[float] | torch.Tensor] = None):
        lam = torch.as_tensor(lambdas, dtype=torch.float64).clone()
        check_lambdas(lam)
        self.lambdas = lam
        self.lambdas_T = None
        if lambdas_T is not None:
            lam_T = torch.as_tensor(lambdas_T, dtype=torch.float64).clone()
            check_lambdas(lam_T)
            if lam_T.numel() != lam.numel():
                raise LambdaScheduleError(f"λ at t = T has {lam_T.numel()} frames, λ at t = 0 has {lam.numel()}")
            if not torch.equal(lam_T, lam):  # equal ends: the same prior as without them
                self.lambdas_T = lam_T

    @property
    def time_dependent(self) -> bool:
        return self.lambdas_T is not None

    def lambdas_at(self, level=None) -> torch.Tensor:
        """λ at noise level ``level`` (u in [0, 1]): ``(T,)`` for a float, ``(B, T)`` for a ``(B,)`` tensor;
        ``lambdas`` itself for a prior that does not depend on the level."""
        if self.lambdas_T is None:
            return self.lambdas
        if level is None:
            raise NoisePriorError("this decomposed prior's λ depends on the noise level (noise.value_T / "
                                  "per_frame_T are set): pass level= (process.noise_level(t))")
        u = torch.as_tensor(level, dtype=torch.float64)
        if u.is_meta:  # shapes only (counting FLOPs): no values to check, λ's shape for this level's shape
            return (self.lambdas if u.dim() == 0 else self.lambdas.expand(u.numel(), -1)).to("meta")
        u = u.cpu()
        if not bool(((u >= 0) & (u <= 1)).all()):
            raise NoisePriorError(f"noise level must be in [0, 1], got {u.tolist()}")
        if u.dim() == 0:
            return lambdas_at_level(self.lambdas, self.lambdas_T, float(u))
        return lambdas_at_level(self.lambdas[None], self.lambdas_T[None], u.reshape(-1, 1))

    @classmethod
    def from_schedule(cls, num_frames: int, schedule: str = "constant", **kwargs) -> "DecomposedNoise":
        return cls(lambda_schedule(num_frames, schedule, **kwargs))

    @classmethod
    def constant(cls, num_frames: int, value: float = 0.5) -> "DecomposedNoise":
        return cls.from_schedule(num_frames, "constant", value=value)

    @classmethod
    def independent(cls, num_frames: int) -> "DecomposedNoise":
        """λ ≡ 0 off the keyframe: ε^i i.i.d. (the keyframe's ε is b, itself N(0, I))."""
        return cls.constant(num_frames, 0.0)

    @property
    def num_frames(self) -> int:
        return self.lambdas.numel()

    @property
    def keyframe(self) -> int:
        return keyframe_index(self.num_frames)

    @property
    def is_independent(self) -> bool:
        off = [i for i in range(self.num_frames) if i != self.keyframe]
        ends = [self.lambdas] + ([self.lambdas_T] if self.lambdas_T is not None else [])
        return all(bool((lam[off] == 0).all()) for lam in ends)

    def sample(self, shape: Sequence[int], generator: Optional[torch.Generator] = None,
               device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
               level=None) -> NoiseSample:
        """Draw ``(eps, base, residual)`` for ``shape = (B, C, T, H, W)``.

        The draws of :func:`draw`: the keyframe slice of ``z`` is the base noise ``b`` and
        its other frames are the residuals ``r^i``; ``s`` is the keyframe's residual (multiplied by
        sqrt(1 − 1) = 0). Hence with λ ≡ 0 off the keyframe, ``eps`` is bit-for-bit
        ``torch.randn(shape, generator=g)``: independent noise exactly.
        """
        b, c, t, h, w = self._check_shape(shape)
        k = self.keyframe
        z, s = draw((b, c, t, h, w), generator, device, dtype)
        base = z[:, :, k:k + 1].clone()
        residual = z.clone()
        residual[:, :, k:k + 1] = s
        lam = self.lambdas_at(level)
        if lam.dim() == 2 and lam.shape[0] != b:
            raise ValueError(f"{lam.shape[0]} noise levels for a batch of {b}")
        eps = compose(base, residual, lam)
        eps[:, :, k:k + 1] = base  # exact (no rounding from sqrt(1)·b + 0·r)
        if self.is_independent:
            eps = z
        return NoiseSample(eps=eps, base=base, residual=residual)

    def correlation(self, level: Optional[float] = None) -> torch.Tensor:
        """The theoretical inter-frame correlation matrix, sqrt(λ^i λ^j) off the diagonal (λ at ``level``)."""
        lam = self.lambdas_at(None if level is None else float(level))
        s = lam.sqrt()
        corr = s[:, None] * s[None, :]
        corr.fill_diagonal_(1.0)
        return corr

    def __repr__(self) -> str:
        ends = f", lambdas_T={[round(float(v), 4) for v in self.lambdas_T]}" if self.lambdas_T is not None else ""
        return f"DecomposedNoise(lambdas={[round(float(v), 4) for v in self.lambdas]}{ends})"


# --------------------------------------------------------------------------- the prior registry

def decomposed_prior(num_frames: int, schedule: str = "constant", value: float = 0.5, min_value: float = 0.0,
                     rate: float = 0.7, per_frame: Optional[Sequence[float]] = None, value_T: Optional[float] = None,
                     min_value_T: Optional[float] = None, per_frame_T: Optional[Sequence[float]] = None,
                     **unused) -> DecomposedNoise:
    """VideoFusion's decomposed noise with a λ schedule (the ``noise`` section's λ keys). ``value_T``
    (``min_value_T``; ``per_frame_T`` for a list) give the same schedule's λ at t = T, making λ depend
    on the noise level; unset, λ is the same at every level."""
    lam = lambda_schedule(num_frames, schedule=schedule, value=value, min_value=min_value, rate=rate,
                          values=list(per_frame) if per_frame is not None else None)
    if schedule == "list" and (value_T is not None or min_value_T is not None):
        raise LambdaScheduleError("λ schedule 'list' takes its λ at t = T from per_frame_T, not value_T/min_value_T")
    if schedule != "list" and per_frame_T is not None:
        raise LambdaScheduleError(f"per_frame_T is for λ schedule 'list'; schedule '{schedule}' takes value_T "
                                  "(and min_value_T)")
    if value_T is None and min_value_T is None and per_frame_T is None:
        return DecomposedNoise(lam)
    lam_T = lambda_schedule(num_frames, schedule=schedule, value=value if value_T is None else value_T,
                            min_value=min_value if min_value_T is None else min_value_T, rate=rate,
                            values=list(per_frame_T) if per_frame_T is not None else None)
    return DecomposedNoise(lam, lam_T)


def independent_prior(num_frames: int, **unused) -> IndependentNoise:
    """I.i.d. per-frame noise: bit for bit ``torch.randn`` of the clip's shape."""
    return IndependentNoise(num_frames)


def build_noise_prior(name: str, num_frames: int, **params) -> NoisePrior:
    """The prior registered as ``name`` (see :mod:`vfusion.diffusion.priors`) for clips of ``num_frames``;
    ``params`` are the config's ``noise`` keys (each prior reads its own: the λ keys, ``alpha``)."""
    from vfusion.diffusion.priors import NOISE_PRIORS
    from vfusion.utils.registry import choose, load_entry

    return load_entry(choose(NOISE_PRIORS, name, "noise.prior"))(num_frames, **params)


def noise_prior_from_config(noise_cfg, num_frames: int) -> NoisePrior:
    """The prior of an experiment's ``noise`` section (or the same keys as a dict): ``prior`` plus its parameters."""
    params = dict(noise_cfg)
    name = params.pop("prior")
    for key in ("per_frame", "per_frame_T"):
        if params.get(key) is not None:
            params[key] = list(params[key])
    return build_noise_prior(name, num_frames, **params)


def keyframe_lambdas(prior) -> torch.Tensor:
    """The per-frame λ of a prior with a shared keyframe base (what VideoFusion composes with), or a
    :class:`NoisePriorError` naming the fix."""
    lam = getattr(prior, "lambdas", None)
    if lam is None:
        raise NoisePriorError(f"VideoFusion needs a noise prior with a shared keyframe base, not {prior!r}; use "
                              "noise.prior=decomposed (noise.value=0: independent noise off the keyframe)")
    return lam


def lambdas_from_config(noise_cfg, num_frames: int) -> torch.Tensor:
    """The per-frame λ of an experiment's noise prior (λ ≡ 0 off the keyframe for ``independent``).

    The PYoCo priors have no per-frame λ (no frame is special): a :class:`NoisePriorError`."""
    prior = noise_prior_from_config(noise_cfg, num_frames)
    if isinstance(prior, IndependentNoise):
        return lambda_schedule(num_frames, "constant", value=0.0)
    lam = getattr(prior, "lambdas", None)
    if lam is None:
        raise NoisePriorError(f"noise prior '{dict(noise_cfg)['prior']}' has no per-frame λ; its frame "
                              "correlation is prior.correlation()")
    return lam
