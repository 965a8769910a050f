"""The metric formulas, as pure functions of feature arrays (numpy, float64); nothing here knows videos or detectors.

* Fréchet distance (FVD on I3D features, FID on Inception features; StyleGAN-V ``fvd2048_16f``, the FID/FVD
  papers): ``d² = ||μ₁ − μ₂||² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2})``. The root is scipy's ``sqrtm``, its real part kept
  (tiny imaginary parts are round-off); when the product is (near-)singular and the root is not finite, ``eps·I``
  is added to both covariances and the root retried, as common FID code does.
* KVD / KID: the unbiased squared MMD with the polynomial kernel ``k(x, y) = (xᵀy / d + 1)³`` (degree 3,
  gamma = 1/d, coef 1), averaged as in StyleGAN-V's / StyleGAN2-ADA's KID code over 100 seeded subsets of
  ``m = min(n_real, n_fake, 1000)`` samples drawn without replacement (with 2048 clips a subset is 1000 clips).
* Inception Score (TGAN / StyleGAN-V ``isv2048_ucf`` protocol): the classifier's softmax outputs are cut into 10
  consecutive splits; per split ``IS = exp(mean_x KL(p(y|x) || p(y)))`` with ``p(y)`` the split's mean prediction;
  the mean and (population) std over splits are reported.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg

KVD_NUM_SUBSETS = 100
KVD_MAX_SUBSET_SIZE = 1000
IS_NUM_SPLITS = 10


def _as_2d(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (num_samples, num_features), got shape {x.shape}")
    return x


def _sqrtm(a: np.ndarray) -> np.ndarray:
    """scipy's matrix square root without its singular-matrix chatter (``disp`` is deprecated)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = scipy.linalg.sqrtm(a)
    return np.asarray(out[0] if isinstance(out, tuple) else out)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mean/covariance shapes do not match: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}")
    if not (np.isfinite(mu1).all() and np.isfinite(mu2).all() and np.isfinite(sigma1).all()
            and np.isfinite(sigma2).all()):
        raise ValueError("mean/covariance contain NaN or inf: the detector produced non-finite features")

    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(f"Fréchet distance: sqrtm of the covariance product is not finite (near-singular "
                      f"covariances, e.g. fewer samples than feature dimensions); retrying with {eps:g}·I added")
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    dist = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)
    return float(dist)


def frechet_distance_from_features(x, y, ddof: int = 0) -> float:
    """Fréchet distance of the Gaussians fitted to two feature sets (rows are samples)."""
    x, y = _as_2d(x, "x"), _as_2d(y, "y")
    return frechet_distance(x.mean(0), np.cov(x, rowvar=False, ddof=ddof),
                            y.mean(0), np.cov(y, rowvar=False, ddof=ddof))


def polynomial_kernel(x, y, degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> np.ndarray:
    """``(gamma · x yᵀ + coef0) ** degree`` with gamma = 1 / num_features by default."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (gamma * (x @ y.T) + coef0) ** degree


def mmd2_unbiased(x, y, degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> float:
    """Unbiased squared MMD of two equally sized samples with the polynomial kernel."""
    x, y = _as_2d(x, "x"), _as_2d(y, "y")
    m = x.shape[0]
    if y.shape[0] != m or m < 2:
        raise ValueError(f"unbiased MMD needs two samples of equal size >= 2, got {x.shape[0]} and {y.shape[0]}")
    kxx = polynomial_kernel(x, x, degree, gamma, coef0)
    kyy = polynomial_kernel(y, y, degree, gamma, coef0)
    kxy = polynomial_kernel(x, y, degree, gamma, coef0)
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2.0 * kxy.mean())


def kernel_distance(real, fake, num_subsets: int = KVD_NUM_SUBSETS, max_subset_size: int = KVD_MAX_SUBSET_SIZE,
                    seed: int = 0) -> tuple[float, float]:
    """KVD/KID: mean and std of the unbiased polynomial MMD² over random subsets."""
    real, fake = _as_2d(real, "real features"), _as_2d(fake, "fake features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sizes differ: real {real.shape[1]}, fake {fake.shape[1]}")
    m = min(real.shape[0], fake.shape[0], max_subset_size)
    if m < 2:
        raise ValueError(f"KVD needs at least 2 real and 2 fake samples, got {real.shape[0]} and {fake.shape[0]}")
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets)
    for i in range(num_subsets):
        xs = fake[rng.choice(fake.shape[0], m, replace=False)]
        ys = real[rng.choice(real.shape[0], m, replace=False)]
        values[i] = mmd2_unbiased(xs, ys)
    return float(values.mean()), float(values.std())


def inception_score(probs, num_splits: int = IS_NUM_SPLITS, eps: float = 1e-12) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) || p(y))) per split; returns (mean, std) over the splits.

    ``probs`` are class probabilities (rows sum to 1), e.g. a softmax of logits.
    """
    p = _as_2d(probs, "probs")
    if (p < -1e-6).any() or not np.allclose(p.sum(1), 1.0, atol=1e-3):
        raise ValueError("inception_score expects probabilities (non-negative rows summing to 1); "
                         "apply a softmax to logits first")
    if p.shape[0] < num_splits:
        raise ValueError(f"inception_score needs at least num_splits={num_splits} samples, got {p.shape[0]}")
    scores = []
    for part in np.array_split(p, num_splits):
        py = part.mean(0, keepdims=True)
        kl = (part * (np.log(part + eps) - np.log(py + eps))).sum(1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def softmax(logits) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
