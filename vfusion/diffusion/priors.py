"""The noise-prior registry: ``noise.prior`` -> the function that builds it.

Torch-free (config validation reads the names); the builders live in :mod:`vfusion.diffusion.noise` and
:mod:`vfusion.diffusion.pyoco` and take ``(num_frames, **params)`` with the parameter names of the ``noise`` section
(a builder ignores other priors' keys). Every frame of every prior is N(0, I); only the frame correlation differs:

    independent         ρ_ij = 0
    decomposed          ρ_ij = sqrt(λ^i λ^j)             (VideoFusion; λ^{T//2} = 1; value_T / per_frame_T: λ(t))
    pyoco_mixed         ρ_ij = α² / (1 + α²)             (PYoCo, Ge et al. ICCV 2023; noise.alpha)
    pyoco_progressive   ρ_ij = (α / sqrt(1 + α²))^|i−j|  (PYoCo's AR(1) chain; noise.alpha)

With λ ≡ 0 off the keyframe or α = 0 each of them is the ``independent`` prior bit for bit.
"""

from __future__ import annotations

# λ schedules of the decomposed prior (vfusion.diffusion.noise.lambda_schedule)
LAMBDA_SCHEDULES = ("constant", "linear", "exponential", "cosine", "list")

NOISE_PRIORS: dict[str, str] = {
    "decomposed": "vfusion.diffusion.noise:decomposed_prior",    # VideoFusion: shared base + residual (λ keys)
    "independent": "vfusion.diffusion.noise:independent_prior",  # i.i.d. per-frame noise: plain randn
    "pyoco_mixed": "vfusion.diffusion.pyoco:mixed_prior",        # PYoCo: one shared part for all frames (α)
    "pyoco_progressive": "vfusion.diffusion.pyoco:progressive_prior",  # PYoCo: AR(1) chain over frames (α)
}

# priors whose keyframe noise is a shared base b (what VideoFusion's base generator predicts)
KEYFRAME_BASE_PRIORS = ("decomposed",)

# priors that read noise.alpha, and their α when it is unset (PYoCo's reported defaults, from a
# third-party reimplementation: unverified)
ALPHA_PRIORS: dict[str, float] = {"pyoco_mixed": 1.0, "pyoco_progressive": 2.0}


def prior_names() -> tuple[str, ...]:
    return tuple(NOISE_PRIORS)


def describe(noise) -> str:
    """A short name of an experiment's noise prior (its ``noise`` section, or the same keys as a
    dict): the λ schedule for ``decomposed`` (``constant 0.5``, ``linear 0.9->0.1``), the prior
    with its α for PYoCo's (``pyoco_progressive α=2``), ``independent``."""
    n = dict(noise)
    prior = n.get("prior", "decomposed")
    if prior in ALPHA_PRIORS:
        alpha = n.get("alpha")
        return f"{prior} α={ALPHA_PRIORS[prior] if alpha is None else alpha:g}"
    if prior != "decomposed":
        return str(prior)
    schedule = n.get("schedule", "constant")
    if schedule == "constant":
        text = f"constant {n['value']:g}"
    elif schedule in ("linear", "cosine"):
        text = f"{schedule} {n['value']:g}->{n['min_value']:g}"
    elif schedule == "exponential":
        text = f"exponential {n['value']:g}x{n['rate']:g}^d"
    else:
        text = "list " + ",".join(f"{v:g}" for v in (n.get("per_frame") or []))
    ends = {k: n.get(k) for k in ("value_T", "min_value_T", "per_frame_T") if n.get(k) is not None}
    if ends:  # λ that depends on t: its value at t = T
        text += " (t=T: " + ", ".join(f"{k[:-2]} {','.join(f'{x:g}' for x in v) if k == 'per_frame_T' else f'{v:g}'}"
                                      for k, v in ends.items()) + ")"
    return text


def check_noise_section(cfg) -> None:
    """The ``noise`` section's names and keys; building the prior (:mod:`vfusion.experiment`) checks the rest."""
    from vfusion.config import ConfigError, check_choice

    n = cfg.noise
    check_choice(n.prior, prior_names(), "noise.prior")
    check_choice(n.schedule, LAMBDA_SCHEDULES, "noise.schedule")
    timed = [k for k in ("value_T", "min_value_T", "per_frame_T") if n.get(k) is not None]
    if timed and n.prior != "decomposed":
        raise ConfigError(f"config key 'noise.{timed[0]}' is set, but only the decomposed prior has a λ that can depend "
                          f"on t, not '{n.prior}'; remove it (noise.{timed[0]}=null)")
    if n.alpha is not None and n.prior not in ALPHA_PRIORS:
        raise ConfigError(f"config key 'noise.alpha' is set, but prior '{n.prior}' does not use it (only "
                          f"{', '.join(ALPHA_PRIORS)} do); remove it (noise.alpha=null)")
