"""The objective as one object: forward process, training target, conversions, samplers.

A :class:`DiffusionProcess` is built from a diffusers scheduler config (a dict or a ``scheduler_config.json``) and
owns, in one place (as DiT's ``GaussianDiffusion`` and diffusers' schedulers do):

    z_t = sqrt(ᾱ_t)·x + σ_t·ε,  σ_t = sqrt(1 − ᾱ_t)      target: ε (epsilon) | v = sqrt(ᾱ_t)·ε − σ_t·x | x (sample)
    v → ε:  ε = sqrt(ᾱ_t)·v + σ_t·z_t                   ε → v:  v = (ε − σ_t·z_t) / sqrt(ᾱ_t)
    x → ε:  ε = (z_t − sqrt(ᾱ_t)·x) / σ_t               ε → x:  x = (z_t − σ_t·ε) / sqrt(ᾱ_t)

The loss, the sampler and the VideoFusion composition use only this object, so a model never indexes ᾱ (diffusers'
own beta schedules) itself. It is saved in every run directory and pipeline as ``scheduler/scheduler_config.json``.
Rectified flow is the other kind (:class:`vfusion.diffusion.flow.FlowProcess`); ``factory.make_process`` builds either.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch

from vfusion.diffusion.noise import compose
from vfusion.diffusion.samplers import PREDICTION_TYPES, SamplerSpec, sampler_spec, samplers_for
from vfusion.errors import UserError

CONFIG_NAME = "scheduler_config.json"
# The project's own variance-preserving process (the diffusion section's documented defaults); a
# checkpoint's config carries its own values.
PROJECT_DDPM = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "beta_start": 0.0001,
                "beta_end": 0.02, "clip_sample": True, "prediction_type": "epsilon", "timestep_spacing": "leading",
                "steps_offset": 0, "set_alpha_to_one": True, "rescale_betas_zero_snr": False, "thresholding": False}
# diffusers scheduler classes whose config describes a rectified flow (FlowProcess)
FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler")
# keys only a flow-matching scheduler config has (a flow config that lost its _class_name)
FLOW_ONLY_KEYS = ("shift", "use_dynamic_shifting", "base_shift", "max_shift", "invert_sigmas", "shift_terminal",
                  "time_shift_type", "stochastic_sampling")


class ProcessError(UserError):
    """A scheduler config the project cannot use."""


def read_config(path: str | Path) -> dict:
    """The scheduler config at ``path``: a ``scheduler_config.json`` file or a folder holding one
    (or ``scheduler/`` of it)."""
    path = Path(path)
    for f in (path, path / CONFIG_NAME, path / "scheduler" / CONFIG_NAME):
        if f.is_file():
            try:
                return json.loads(f.read_text())
            except json.JSONDecodeError as err:
                raise ProcessError(f"{f} is not valid JSON ({err}); write it with save_pretrained") from err
    raise ProcessError(f"no {CONFIG_NAME} at {path}; expected a scheduler config file or a folder with one")


def check_sampler(name: str, kind: str, fix: str) -> SamplerSpec:
    """The spec of sampler ``name`` if it runs on a process of ``kind``; else a ProcessError naming ``fix``."""
    spec = sampler_spec(name)
    if kind not in spec.processes:
        raise ProcessError(f"sampler '{name}' ({spec.description}) runs on {' or '.join(spec.processes)} processes, "
                           f"not on this {kind} process; use sample.sampler={fix} "
                           f"(samplers for {kind}: {', '.join(samplers_for(kind))})")
    return spec


class SavedProcess:
    """What both process kinds share: they are written as ``scheduler_config.json`` (``to_json_dict``)."""

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write ``folder/scheduler_config.json`` (atomically)."""
        from vfusion.utils.io import atomic_write_json

        out = Path(folder) / CONFIG_NAME
        atomic_write_json(out, self.to_json_dict())
        return out



class DiffusionProcess(SavedProcess):
    """Variance-preserving diffusion with a diffusers noise schedule and a prediction type.

    The interface every process kind offers (:class:`vfusion.diffusion.flow.FlowProcess` is the
    other one): ``kind``, ``config``, ``num_train_timesteps``, ``prediction_type``,
    ``sample_timesteps``, ``add_noise``, ``target``, ``to_eps`` / ``from_eps``, ``alpha`` / ``sigma``,
    ``compose`` (VideoFusion's non-key frames), ``model_timesteps``, ``scheduler``,
    ``save_pretrained``, ``to_json_dict``, ``describe``.
    """

    kind = "ddpm"

    def __init__(self, config: dict):
        from diffusers import DDIMScheduler, DDPMScheduler

        cfg = {k: v for k, v in dict(config).items()}
        kind = cfg.pop("kind", None) or self.kind
        if cfg.get("use_flow_sigmas"):  # DPM-Solver / UniPC configs of flow models (Wan and the like)
            raise ProcessError(f"{cfg.get('_class_name', 'the scheduler')} with use_flow_sigmas=true samples a flow, "
                               "which this process cannot train; use a FlowMatchEulerDiscreteScheduler config with "
                               "shift = its flow_shift")
        flow_keys = [k for k in FLOW_ONLY_KEYS if k in cfg]
        if kind != self.kind:
            found = f"kind '{kind}'"
        elif cfg.get("_class_name") in FLOW_SCHEDULERS:
            found = cfg["_class_name"]
        elif flow_keys:
            found = "keys " + ", ".join(flow_keys)
        else:
            found = None
        if found:  # DDIMScheduler.from_config would drop its keys and silently build a VP schedule
            raise ProcessError(f"not a variance-preserving scheduler config ({found}); build the process with "
                               "vfusion.diffusion.factory.make_process, which picks the flow process for it")
        pred = cfg.get("prediction_type", "epsilon")
        if pred not in PREDICTION_TYPES:
            raise ProcessError(f"prediction_type '{pred}' is not supported; expected one of {', '.join(PREDICTION_TYPES)}")
        # The full config of a DDIM scheduler: the default sampler's class, a superset of the keys
        # the other samplers read (diffusers' from_config maps it onto any scheduler class).
        self.config: dict = dict(DDIMScheduler.from_config(cfg).config)
        self._train = DDPMScheduler.from_config(self.config)
        self.alphas_cumprod = self._train.alphas_cumprod            # float32, as the diffusers schedulers
        self._ac64 = self.alphas_cumprod.double()
        self._cache: dict = {}

    # ---- saving ----------------------------------------------------------------------------
    def to_json_dict(self) -> dict:
        from diffusers import DDIMScheduler

        return json.loads(DDIMScheduler.from_config(self.config).to_json_string())

    # ---- facts ---------------------------------------------------------------------------
    @property
    def num_train_timesteps(self) -> int:
        return int(self.config["num_train_timesteps"])

    @property
    def prediction_type(self) -> str:
        return self.config["prediction_type"]

    def _table(self, name: str, device) -> torch.Tensor:
        key = (name, str(device))
        if key not in self._cache:
            ac = self._ac64
            table = {"alpha": ac.sqrt(), "sigma": (1.0 - ac).sqrt()}[name]
            self._cache[key] = table.to(device)
        return self._cache[key]

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """sqrt(ᾱ_t), ``(B,)`` float64 (callers cast to their dtype)."""
        return self._table("alpha", t.device)[t]

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """σ_t = sqrt(1 − ᾱ_t), ``(B,)`` float64 (callers cast to their dtype)."""
        return self._table("sigma", t.device)[t]

    def noise_level(self, t: torch.Tensor) -> torch.Tensor:
        """The timestep as a level u in [0, 1]: t / (T − 1), 0 at the cleanest training timestep and 1 at
        the noisiest (what a time-dependent noise prior interpolates its λ with), ``(B,)`` float64."""
        return (t.to(torch.float64) / max(self.num_train_timesteps - 1, 1)).clamp(0.0, 1.0)

    def _coefs(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (-1,) + (1,) * (like.dim() - 1)
        return self.alpha(t).to(like.dtype).view(shape), self.sigma(t).to(like.dtype).view(shape)

    # ---- forward process and target ---------------------------------------------------------
    def sample_timesteps(self, batch: int, device=None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Uniform training timesteps in [0, T)."""
        return torch.randint(0, self.num_train_timesteps, (batch,), device=device, generator=generator)

    def add_noise(self, x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._train.add_noise(x, noise, t)

    def target(self, x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the model is trained to predict."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "sample":
            return x
        return self._train.get_velocity(x, noise, t)

    def loss_weights(self, t: torch.Tensor, scheme: str = "none", gamma: float = 5.0) -> Optional[torch.Tensor]:
        """Per-sample loss weights ``(B,)`` float32, or None for ``none``.

        ``min_snr`` (Hang et al., ICCV 2023): the loss in x-space weighted by min(SNR_t, γ), written in the
        units of this process's target: ε: min(SNR, γ) / SNR; v: min(SNR, γ) / (SNR + 1); x: min(SNR, γ).
        """
        if scheme == "none":
            return None
        if scheme != "min_snr":
            raise ProcessError(f"loss weighting '{scheme}' is not one of none, min_snr")
        ac = self._ac64.to(t.device)[t]
        snr = ac / (1.0 - ac)
        clipped = snr.clamp(max=float(gamma))
        w = {"epsilon": clipped / snr, "v_prediction": clipped / (snr + 1.0), "sample": clipped}[self.prediction_type]
        return w.float()

    def to_eps(self, pred: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε from a prediction of this process's type."""
        if self.prediction_type == "epsilon":
            return pred
        a, s = self._coefs(t, x_t)
        if self.prediction_type == "v_prediction":
            return a * pred + s * x_t
        return (x_t - a * pred) / s

    def from_eps(self, eps: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """A prediction of this process's type from ε (the inverse of :meth:`to_eps`)."""
        if self.prediction_type == "epsilon":
            return eps
        a, s = self._coefs(t, x_t)
        if self.prediction_type == "v_prediction":
            return (eps - s * x_t) / a
        return (x_t - s * eps) / a

    def compose(self, b_hat: torch.Tensor, r_hat: torch.Tensor, lam: torch.Tensor, z_other: torch.Tensor,
                t: torch.Tensor) -> torch.Tensor:
        """VideoFusion's prediction for the non-key frames, in this process's target space.

        ε̂^i = sqrt(λ^i)·b̂ + sqrt(1 − λ^i)·r̂^i (the paper's composition, in ε-space: the noise's own
        :func:`~vfusion.diffusion.noise.compose`), then
        converted to the target with :meth:`from_eps`. ``b_hat`` (B, C, 1, H, W) is the base noise in
        ε-space, ``r_hat`` / ``z_other`` (B, C, T', H, W), ``lam`` broadcastable to them.
        """
        return self.from_eps(compose(b_hat, r_hat, lam), z_other, t)

    # ---- sampling ------------------------------------------------------------------------
    def model_timesteps(self, t, batch: int, device) -> torch.Tensor:
        """The scheduler's timestep ``t`` as the ``(B,)`` tensor the networks take (integers here)."""
        return torch.full((batch,), int(t), device=device, dtype=torch.long)

    def scheduler(self, sampler: str):
        """A fresh diffusers scheduler for ``sampler`` on this process's schedule and prediction type."""
        import diffusers

        spec = check_sampler(sampler, self.kind, fix="ddim")
        return getattr(diffusers, spec.scheduler_class).from_config(self.config, **spec.overrides)

    def describe(self) -> dict[str, Any]:
        keys = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type", "clip_sample",
                "timestep_spacing", "steps_offset")
        return {k: self.config.get(k) for k in keys}

    def __repr__(self) -> str:
        return f"DiffusionProcess({self.describe()})"


def frame_losses(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-frame MSE, ``(B, C, T, H, W) -> (B, T)``."""
    return (pred.float() - target.float()).pow(2).mean(dim=(1, 3, 4))


def loss_terms(pred: torch.Tensor, target: torch.Tensor, keyframe: int,
               weights: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
    """``total`` (optimised), ``base`` (keyframe) and ``residual`` (non-key frames) MSE, each clip's
    frames weighted by ``weights`` (B,) when given (e.g. min-SNR)."""
    per_frame = frame_losses(pred, target)
    if weights is not None:
        per_frame = per_frame * weights.to(per_frame).view(-1, 1)
    terms = {"total": per_frame.mean(), "base": per_frame[:, keyframe].mean()}
    if per_frame.shape[1] > 1:  # slices, not a boolean mask, so that shapes alone (the meta device) suffice
        terms["residual"] = torch.cat([per_frame[:, :keyframe], per_frame[:, keyframe + 1:]], dim=1).mean()
    return terms

