"""Forward process and training targets, on top of diffusers schedulers.

    z_t = sqrt(ᾱ_t) · x + sqrt(1 − ᾱ_t) · ε          (``scheduler.add_noise``)
    L   = mean_i || ε^i − ε̂^i ||²

The loss is split per frame so the base (keyframe) and residual (other frames)
parts can be logged separately; ``total`` is the mean over all frames.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

SAMPLERS = ("ddpm", "ddim", "dpm")


def scheduler_kwargs(diff_cfg) -> dict:
    return dict(num_train_timesteps=diff_cfg.num_train_timesteps, beta_schedule=diff_cfg.beta_schedule,
                beta_start=diff_cfg.beta_start, beta_end=diff_cfg.beta_end, prediction_type="epsilon")


def train_scheduler(diff_cfg) -> DDPMScheduler:
    return DDPMScheduler(clip_sample=diff_cfg.clip_sample, **scheduler_kwargs(diff_cfg))


def sampling_scheduler(diff_cfg, sampler: str):
    """A fresh scheduler for ``sampler``.

    ``ddpm`` is ancestral sampling with the DDPM posterior variance. It is run as
    DDIM with η = 1, which is the same update (σ_t² = β̃_t, mean = the posterior
    mean) but, unlike diffusers' ``DDPMScheduler.step``, accepts the step's fresh
    noise as an argument, so that noise can be decomposed like the training noise.
    ``tests/test_sampling.py`` checks the two agree step for step.
    """
    kw = scheduler_kwargs(diff_cfg)
    if sampler in ("ddpm", "ddim"):
        return DDIMScheduler(clip_sample=diff_cfg.clip_sample, set_alpha_to_one=True, timestep_spacing="leading",
                             steps_offset=0, **kw)
    if sampler == "dpm":
        return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, **kw)
    raise ValueError(f"unknown sampler '{sampler}'; expected one of {', '.join(SAMPLERS)}")


def frame_losses(eps_hat: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Per-frame MSE, ``(B, C, T, H, W) -> (B, T)``."""
    return (eps_hat.float() - eps.float()).pow(2).mean(dim=(1, 3, 4))


def loss_terms(eps_hat: torch.Tensor, eps: torch.Tensor, keyframe: int) -> dict[str, torch.Tensor]:
    """``total`` (optimised), ``base`` (keyframe) and ``residual`` (non-key frames) MSE."""
    per_frame = frame_losses(eps_hat, eps)
    terms = {"total": per_frame.mean(), "base": per_frame[:, keyframe].mean()}
    if per_frame.shape[1] > 1:
        mask = torch.ones(per_frame.shape[1], dtype=torch.bool, device=per_frame.device)
        mask[keyframe] = False
        terms["residual"] = per_frame[:, mask].mean()
    return terms
