"""Rectified flow as a process kind: the same interface as :class:`~vfusion.diffusion.process.DiffusionProcess`.

Forward process and target (method.md, "Rectified flow"), with σ = t / T, T = ``num_train_timesteps``:

    z_σ = (1 − σ)·x + σ·ε   (σ = 0: data, σ = 1: noise)      v = dz/dσ = ε − x   (``flow_prediction``)
    ε = z + (1 − σ)·v   (to_eps)                              v = (ε − z) / (1 − σ)   (from_eps, singular at σ = 1)

The networks take the float timestep t = σ·T, the value diffusers' ``FlowMatchEulerDiscreteScheduler`` hands out.
VideoFusion composes the non-key frames in velocity space, v̂^i = sqrt(λ^i)·b̂ + ψ^i (:meth:`FlowProcess.compose`),
dividing by nothing, so it is defined at σ = 1 where sampling starts. Sampling is diffusers' Euler step
z_σ' = z_σ + (σ' − σ)·v̂ from z_1 = ε of the run's noise prior (samplers ``euler`` and ``ddim``); the keyframe's step
uses only z^k and the base's own v̂^k, so the keyframe still follows the image model's trajectory.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional

import torch

from vfusion.diffusion.process import FLOW_SCHEDULERS, ProcessError, SavedProcess, check_sampler
from vfusion.diffusion.samplers import FLOW_PREDICTION

SCHEDULER_CLASS = "FlowMatchEulerDiscreteScheduler"

# Config values that would make training and sampling disagree, with why and the fix.
_REFUSED = {
    "use_dynamic_shifting": "is a resolution-dependent shift: it needs the image sequence length (diffusers' mu) "
                            "at every set_timesteps, which the project's sampling loop does not pass; "
                            "set use_dynamic_shifting=false and a fixed shift",
    "invert_sigmas": "reverses the σ grid (σ → 1 − σ), against the training convention "
                     "z = (1 − σ)·x + σ·ε; set invert_sigmas=false",
    "stochastic_sampling": "makes the scheduler draw each step's fresh noise itself, independent per frame, which "
                           "breaks the decomposed noise prior; set stochastic_sampling=false",
}


def _scheduler_keys() -> set[str]:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return set(inspect.signature(FlowMatchEulerDiscreteScheduler.__init__).parameters) - {"self"}


class FlowProcess(SavedProcess):
    """Rectified flow with velocity prediction, configured by a ``FlowMatchEulerDiscreteScheduler`` config.

    Offers the interface of :class:`~vfusion.diffusion.process.DiffusionProcess` (see there). Keys of
    other schedulers (``beta_schedule`` and the like) do not describe a flow and are dropped; a
    ``prediction_type`` other than ``flow_prediction`` and the configs in ``_REFUSED`` are refused.
    """

    kind = "flow"

    def __init__(self, config: dict):
        from diffusers import FlowMatchEulerDiscreteScheduler

        cfg = dict(config)
        kind = cfg.pop("kind", None) or self.kind
        if kind != self.kind:
            raise ProcessError(f"FlowProcess got a config of kind '{kind}'; build it with "
                               "vfusion.diffusion.factory.make_process")
        cls_name = cfg.get("_class_name")
        if cls_name is not None and cls_name not in FLOW_SCHEDULERS:
            raise ProcessError(f"{cls_name} does not describe a rectified flow; a flow process needs a "
                               f"{' or '.join(FLOW_SCHEDULERS)} config")
        pred = cfg.pop("prediction_type", FLOW_PREDICTION)
        if pred != FLOW_PREDICTION:
            raise ProcessError(f"a flow process predicts the velocity ε − x (prediction_type '{FLOW_PREDICTION}'), "
                               f"not '{pred}'; drop prediction_type from its config")
        cfg = {k: v for k, v in cfg.items() if k in _scheduler_keys()}
        for key, why in _REFUSED.items():
            if cfg.get(key):
                raise ProcessError(f"{key}=true {why}")
        steps = cfg.get("num_train_timesteps", 1000)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ProcessError(f"num_train_timesteps must be a positive integer, got {steps!r}")
        shift = cfg.get("shift", 1.0)
        if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not shift > 0:
            raise ProcessError(f"shift must be a positive number, got {shift!r}")
        try:
            scheduler = FlowMatchEulerDiscreteScheduler.from_config(cfg)
        except (ValueError, ImportError) as err:
            raise ProcessError(f"invalid {SCHEDULER_CLASS} config: {err}") from err
        self.config: dict = dict(scheduler.config)

    # ---- saving ----------------------------------------------------------------------------
    def to_json_dict(self) -> dict:
        import json

        return json.loads(self._euler().to_json_string())

    # ---- facts ---------------------------------------------------------------------------
    @property
    def num_train_timesteps(self) -> int:
        return int(self.config["num_train_timesteps"])

    @property
    def prediction_type(self) -> str:
        return FLOW_PREDICTION

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """The data coefficient 1 − σ, ``(B,)`` float64 (callers cast to their dtype)."""
        return 1.0 - self.sigma(t)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """The noise coefficient σ = t / T, ``(B,)`` float64 (callers cast to their dtype)."""
        return t.to(torch.float64) / self.num_train_timesteps

    def noise_level(self, t: torch.Tensor) -> torch.Tensor:
        """The timestep as a level u in [0, 1]: σ itself (what a time-dependent noise prior interpolates
        its λ with), ``(B,)`` float64."""
        return self.sigma(t).clamp(0.0, 1.0)

    def _sigma_like(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return self.sigma(t).to(like.dtype).view((-1,) + (1,) * (like.dim() - 1))

    # ---- forward process and target ---------------------------------------------------------
    def sample_timesteps(self, batch: int, device=None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Float timesteps t = σ·T with σ ~ U[0, 1), ``(B,)`` float32.

        σ = 0 (probability about 2^-24) is harmless: no training path divides by σ or 1 − σ. The config's
        ``shift`` s does not change this: it only moves the sampling grid, σ → s·σ / (1 + (s − 1)·σ), towards the
        noisy end.
        """
        sigma = torch.rand(batch, device=device, generator=generator)
        return sigma * self.num_train_timesteps

    def add_noise(self, x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = self._sigma_like(t, x)
        return (1.0 - s) * x + s * noise

    def target(self, x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The velocity v = ε − x."""
        return noise - x

    def to_eps(self, pred: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε = z + (1 − σ)·v from a predicted velocity."""
        return x_t + (1.0 - self._sigma_like(t, x_t)) * pred

    def from_eps(self, eps: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v = (ε − z) / (1 − σ): infinite at σ = 1 (pure noise carries no information about v there).
        VideoFusion composes in velocity space (:meth:`compose`) and never calls this."""
        return (eps - x_t) / (1.0 - self._sigma_like(t, x_t))

    def compose(self, b_hat: torch.Tensor, r_hat: torch.Tensor, lam: torch.Tensor, z_other: torch.Tensor,
                t: torch.Tensor) -> torch.Tensor:
        """VideoFusion's velocity for the non-key frames: v̂^i = sqrt(λ^i)·b̂ + ψ^i.

        With ε^i = sqrt(λ^i)·b + sqrt(1 − λ^i)·r^i and n^i = sqrt(1 − λ^i)·r^i, the input of ψ (computed by
        ``VideoFusion.forward`` with ``process.sigma``, as for VP) is z'^i = z^i − σ·sqrt(λ^i)·b̂ = (1 − σ)·x^i + σ·n^i
        when b̂ = b: it lies on the flow from x^i to n^i. The velocity splits exactly, v^i = ε^i − x^i =
        sqrt(λ^i)·b + (n^i − x^i), so ψ(z'^i, t, i) ≈ n^i − x^i and b̂ = ε̂^k = z^k + (1 − σ)·v̂^k (λ^k = 1: ε^k = b),
        with v̂^k the base's velocity on the keyframe. Check with the exact velocity v = (z − x)/σ of one data clip:
        b̂ = (z^k − (1 − σ)·x^k)/σ, ψ = (z'^i − x^i)/σ, and v̂^i = (z^i − x^i)/σ (tests/test_flow.py).

        ``b_hat`` (B, C, 1, H, W) is the base noise ε̂^k; ``r_hat`` (B, C, T', H, W) is the residual
        generator's output, the velocity of the flow z'^i (not scaled by sqrt(1 − λ^i)); ``z_other``
        and ``t`` are not needed (the same signature as the VP process).
        """
        return lam.sqrt() * b_hat + r_hat

    # ---- sampling ------------------------------------------------------------------------
    def model_timesteps(self, t, batch: int, device) -> torch.Tensor:
        """The scheduler's (float) timestep ``t`` as the ``(B,)`` float32 tensor the networks take."""
        return torch.full((batch,), float(t), device=device, dtype=torch.float32)

    def _euler(self):
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_config(self.config)

    def scheduler(self, sampler: str):
        """A fresh ``FlowMatchEulerDiscreteScheduler`` for ``sampler`` (``euler``, or ``ddim``: the same step)."""
        check_sampler(sampler, self.kind, fix="euler")
        return self._euler()

    def describe(self) -> dict[str, Any]:
        keys = ("num_train_timesteps", "shift", "shift_terminal", "use_karras_sigmas", "use_exponential_sigmas",
                "use_beta_sigmas")
        return {"kind": self.kind, "prediction_type": self.prediction_type, **{k: self.config.get(k) for k in keys}}

    def __repr__(self) -> str:
        return f"FlowProcess({self.describe()})"
