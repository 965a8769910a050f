"""Decomposed noise: statistics, composition, schedules, errors."""

import math

import pytest
import torch

from vfusion import DecomposedNoise, lambda_schedule
from vfusion.diffusion.noise import LambdaScheduleError, compose


def _frame_corr(eps):
    # eps (B, C, T, H, W) -> (T, T) correlation over all other axes
    t = eps.shape[2]
    flat = eps.permute(2, 0, 1, 3, 4).reshape(t, -1)
    return torch.corrcoef(flat)


@pytest.mark.parametrize("schedule,kw", [("constant", {"value": 0.5}), ("cosine", {"value": 0.9, "min_value": 0.1}),
                                         ("exponential", {"value": 0.8, "rate": 0.5})])
def test_unit_variance_and_correlation(schedule, kw):
    noise = DecomposedNoise.from_schedule(8, schedule, **kw)
    g = torch.Generator().manual_seed(0)
    eps = noise((4000, 1, 8, 4, 4), generator=g)
    var = eps.permute(2, 0, 1, 3, 4).reshape(8, -1).var(dim=1)
    assert torch.allclose(var, torch.ones(8), atol=0.03)
    corr = _frame_corr(eps)
    expected = noise.correlation().float()
    assert torch.allclose(corr, expected, atol=0.03), (corr, expected)


def test_keyframe_is_base_and_composition():
    noise = DecomposedNoise.constant(5, 0.3)
    eps, base, residual = noise.sample((2, 3, 5, 4, 4), generator=torch.Generator().manual_seed(1))
    assert base.shape == (2, 3, 1, 4, 4)
    assert torch.equal(eps[:, :, 2:3], base)
    lam = torch.tensor([0.3, 0.3, 1.0, 0.3, 0.3])
    manual = lam.sqrt().view(1, 1, 5, 1, 1) * base + (1 - lam).sqrt().view(1, 1, 5, 1, 1) * residual
    assert torch.allclose(eps, manual, atol=1e-6)
    assert torch.allclose(compose(base, residual, noise.lambdas), manual, atol=1e-6)


def test_lambda_zero_is_independent_noise_exactly():
    noise = DecomposedNoise.constant(16, 0.0)
    assert noise.is_independent
    eps = noise((2, 3, 16, 8, 8), generator=torch.Generator().manual_seed(7))
    ref = torch.randn((2, 3, 16, 8, 8), generator=torch.Generator().manual_seed(7))
    assert torch.equal(eps, ref)


def test_lambda_one_shares_all_noise():
    noise = DecomposedNoise(torch.ones(6))
    eps = noise((2, 1, 6, 4, 4), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(eps, eps[:, :, :1].expand_as(eps))


def test_deterministic_given_generator():
    noise = DecomposedNoise.constant(4, 0.5)
    a = noise((1, 1, 4, 4, 4), generator=torch.Generator().manual_seed(3))
    b = noise((1, 1, 4, 4, 4), generator=torch.Generator().manual_seed(3))
    c = noise((1, 1, 4, 4, 4), generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_schedules_shape_keyframe_and_decay():
    for t in (1, 2, 5, 16):
        for s in ("constant", "linear", "exponential", "cosine"):
            lam = lambda_schedule(t, s, value=0.8, min_value=0.2)
            assert lam.shape == (t,) and lam[t // 2] == 1.0
    lam = lambda_schedule(16, "linear", value=0.8, min_value=0.2)
    k = 8
    dist = [abs(i - k) for i in range(16)]
    order = sorted(range(16), key=lambda i: dist[i])
    vals = [float(lam[i]) for i in order]
    assert all(a >= b - 1e-12 for a, b in zip(vals, vals[1:]))  # non-increasing with distance
    assert math.isclose(float(lam[k - 1]), 0.8) and math.isclose(float(lam[0]), 0.2)
    assert math.isclose(float(lambda_schedule(16, "exponential", value=0.8, rate=0.5)[k + 2]), 0.4)
    assert lambda_schedule(3, "list", values=[0.2, 1.0, 0.4]).tolist() == [0.2, 1.0, 0.4]


@pytest.mark.parametrize("kwargs,match", [
    ({"schedule": "constant", "value": 1.5}, "outside"),
    ({"schedule": "constant", "value": -0.1}, "outside"),
    ({"schedule": "list", "values": [0.5, 1.0]}, "frames"),
    ({"schedule": "list", "values": [0.5, 0.5, 0.5]}, "keyframe"),
    ({"schedule": "list", "values": [0.5, 1.0, 2.0]}, "outside"),
    ({"schedule": "wobbly"}, "unknown"),
])
def test_invalid_schedules_raise(kwargs, match):
    with pytest.raises(LambdaScheduleError, match=match):
        lambda_schedule(3, **kwargs)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="frames"):
        DecomposedNoise.constant(4).sample((1, 1, 5, 2, 2))
