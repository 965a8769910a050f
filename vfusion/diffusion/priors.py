"""The noise-prior registry: ``noise.prior`` -> the function that builds it.

Torch-free (config validation reads the names); the builders live in
:mod:`vfusion.diffusion.noise` and take ``(num_frames, **params)`` with the parameter
names of the config's ``noise`` section. Every prior is a callable noise sampler with
``sample(shape, generator)`` returning ``(eps, base, residual)`` and ``correlation()``.
"""

from __future__ import annotations

# λ schedules of the decomposed prior (vfusion.diffusion.noise.lambda_schedule)
LAMBDA_SCHEDULES = ("constant", "linear", "exponential", "cosine", "list")

NOISE_PRIORS: dict[str, str] = {
    "decomposed": "vfusion.diffusion.noise:decomposed_prior",    # VideoFusion: shared base + residual (λ keys)
    "independent": "vfusion.diffusion.noise:independent_prior",  # i.i.d. per-frame noise (λ ≡ 0)
}


def prior_names() -> tuple[str, ...]:
    return tuple(NOISE_PRIORS)
