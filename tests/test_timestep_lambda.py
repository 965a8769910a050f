"""A decomposed prior whose λ depends on the noise level: λ(u) = (1 − u)·λ_0 + u·λ_T.

Checked: the interpolation against schedules computed here with numpy; the empirical frame
correlation at several levels (and per sample in one batch) against ``correlation(level)``; equal
ends and zero ends reproduce the time-independent and the independent prior bit for bit; the levels
the training loss and the sampling loop draw at; VideoFusion's composition at a level equals the
model built with λ(u) as a constant; config errors."""

import numpy as np
import pytest
import torch

from tests.conftest import tiny_config, tiny_spec
from vfusion.config import ConfigError
from vfusion.experiment import resolve_config
from vfusion.diffusion.factory import make_process
from vfusion.diffusion.flow import FlowProcess
from vfusion.diffusion.loop_settings import LoopSettings
from vfusion.diffusion.noise import DecomposedNoise, NoisePriorError, build_noise_prior, noise_prior_from_config
from vfusion.diffusion.priors import describe
from vfusion.diffusion.process import PROJECT_DDPM
from vfusion.diffusion.sampling import sample_loop
from vfusion.models.registry import build_model
from vfusion.models.spec import ModelSpec

T = 6
K = T // 2
PROCESS = make_process(PROJECT_DDPM)


def _schedule(value, kind="constant", min_value=0.0):
    """The λ schedules of method.md, written out with numpy (distance d from the keyframe)."""
    d = np.abs(np.arange(T) - K)
    frac = np.clip(d - 1, 0, None) / (d.max() - 1)
    lam = np.full(T, value) if kind == "constant" else value + (min_value - value) * frac
    lam[K] = 1.0
    return lam


@pytest.mark.parametrize("kind,ends", [("constant", dict(value=0.2, value_T=0.8)),
                                       ("linear", dict(value=0.9, min_value=0.1, value_T=0.3, min_value_T=0.0))])
def test_lambda_is_the_linear_interpolation_of_the_two_schedules(kind, ends):
    prior = build_noise_prior("decomposed", T, schedule=kind, **ends)
    lo = _schedule(ends["value"], kind, ends.get("min_value", 0.0))
    hi = _schedule(ends["value_T"], kind, ends.get("min_value_T", ends.get("min_value", 0.0)))
    assert prior.time_dependent
    for u in (0.0, 0.25, 0.5, 1.0):
        np.testing.assert_allclose(prior.lambdas_at(u).numpy(), (1 - u) * lo + u * hi, atol=1e-12)
    batch = prior.lambdas_at(torch.tensor([0.0, 1.0, 0.5]))
    assert batch.shape == (3, T)
    np.testing.assert_allclose(batch.numpy(), np.stack([lo, hi, (lo + hi) / 2]), atol=1e-12)


def _frames(eps):
    return eps.permute(2, 0, 1, 3, 4).reshape(eps.shape[2], -1).double()


@pytest.mark.parametrize("u", [0.0, 0.3, 1.0])
def test_empirical_correlation_at_a_level_matches_theory(u):
    prior = build_noise_prior("decomposed", T, schedule="linear", value=0.9, min_value=0.5, value_T=0.1,
                              min_value_T=0.0)
    eps = prior((4096, 2, T, 4, 4), generator=torch.Generator().manual_seed(0), level=u)
    f = _frames(eps)
    assert torch.allclose(f.var(dim=1), torch.ones(T, dtype=torch.float64), atol=0.02)
    assert (torch.corrcoef(f) - prior.correlation(level=u)).abs().max() < 0.02


def test_each_sample_gets_the_lambda_of_its_own_level():
    prior = build_noise_prior("decomposed", T, value=0.0, value_T=0.9)
    levels = torch.tensor([0.0, 1.0]).repeat_interleave(4096)
    eps = prior((8192, 1, T, 4, 4), generator=torch.Generator().manual_seed(1), level=levels)
    for half, u in ((eps[:4096], 0.0), (eps[4096:], 1.0)):
        assert (torch.corrcoef(_frames(half)) - prior.correlation(level=u)).abs().max() < 0.02


def test_equal_ends_and_zero_ends_are_the_plain_priors_bit_for_bit():
    shape, g = (3, 2, T, 4, 4), lambda: torch.Generator().manual_seed(5)
    same = build_noise_prior("decomposed", T, value=0.4, value_T=0.4)
    assert not same.time_dependent
    assert torch.equal(same(shape, generator=g()), build_noise_prior("decomposed", T, value=0.4)(shape, generator=g()))
    zero = build_noise_prior("decomposed", T, value=0.0, value_T=0.0)
    assert torch.equal(zero(shape, generator=g(), level=0.7), torch.randn(shape, generator=g()))
    # a time-dependent prior refuses to guess a level
    with pytest.raises(NoisePriorError, match="level"):
        build_noise_prior("decomposed", T, value=0.0, value_T=0.5)(shape, generator=g())


def test_noise_levels_of_the_processes():
    t = torch.tensor([0, 999])
    assert PROCESS.noise_level(t).tolist() == [0.0, 1.0]
    flow = make_process({"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000})
    assert isinstance(flow, FlowProcess)
    assert flow.noise_level(torch.tensor([0.0, 250.0, 1000.0])).tolist() == [0.0, 0.25, 1.0]


class _Spy:
    """A time-dependent prior that records the level of every draw."""

    time_dependent = True

    def __init__(self):
        self.inner = build_noise_prior("decomposed", 4, value=0.1, value_T=0.9)
        self.levels = []

    def __call__(self, shape, generator=None, device=None, dtype=torch.float32, level=None):
        return self.sample(shape, generator, device, dtype, level).eps

    def sample(self, shape, generator=None, device=None, dtype=torch.float32, level=None):
        self.levels.append(torch.as_tensor(level).clone())
        return self.inner.sample(shape, generator=generator, device=device, dtype=dtype, level=level)


def test_sampling_draws_each_noise_at_the_level_it_is_added_to():
    spy = _Spy()
    model = lambda x, t, cond=None: 0.1 * x  # noqa: E731
    sample_loop(model, PROCESS, spy, (2, 2, 4, 4, 4), LoopSettings("ddpm", 4, progress=False),
                generator=torch.Generator().manual_seed(0))
    sched = PROCESS.scheduler("ddpm")
    sched.set_timesteps(4)
    ts = [int(t) for t in sched.timesteps]
    want = [ts[0]] + ts[1:] + [None]  # the start at the first timestep; each step's noise at the next one (0 last)
    assert len(spy.levels) == len(want)
    for got, t in zip(spy.levels, want):
        assert got.tolist() == ([t / 999] * 2 if t is not None else [0.0, 0.0])


def test_training_draws_noise_at_each_samples_own_level(tmp_path):
    from vfusion.training.runner import build_module

    cfg = tiny_config(tmp_path, "noise.value=0.1", "noise.value_T=0.9")
    module = build_module(cfg, tiny_spec(frames=4))
    assert module.noise.time_dependent
    spy = _Spy()
    module.noise = spy
    torch.manual_seed(0)
    t = module.process.sample_timesteps(4)
    torch.manual_seed(0)
    module.diffusion_loss(torch.zeros(4, 3, 4, 16, 16), torch.zeros(4, dtype=torch.long))
    assert torch.equal(spy.levels[0], module.process.noise_level(t))


def test_videofusion_composes_with_lambda_at_each_samples_level(tmp_path):
    cfg = tiny_config(tmp_path)
    timed = build_noise_prior("decomposed", 4, value=0.2, value_T=0.8)
    torch.manual_seed(0)
    model = build_model(cfg, ModelSpec(3, 16, 4, 2, process=PROCESS, noise=timed))
    x = torch.randn(2, 3, 4, 16, 16)
    t = torch.tensor([0, 999])
    out = model(x, t)
    for i, lam in enumerate((0.2, 0.8)):
        fixed = build_model(cfg, ModelSpec(3, 16, 4, 2, process=PROCESS, noise=DecomposedNoise.constant(4, lam)))
        fixed.load_state_dict(model.state_dict())
        assert torch.allclose(out[i:i + 1], fixed(x[i:i + 1], t[i:i + 1]), atol=1e-6)


def test_config_keys_and_errors():
    cfg = resolve_config({"name": "x"}, overrides=["noise.value=0.2", "noise.value_T=0.7"])
    prior = noise_prior_from_config(cfg.noise, 4)
    assert prior.time_dependent and describe(cfg.noise) == "constant 0.2 (t=T: value 0.7)"
    with pytest.raises(ConfigError, match="only the decomposed prior"):
        resolve_config({"name": "x"}, overrides=["model.name=video_unet", "noise.prior=pyoco_mixed",
                                               "noise.value_T=0.5"])
    with pytest.raises(NoisePriorError, match="per_frame_T"):
        build_noise_prior("decomposed", 4, value=0.2, per_frame_T=[0, 0, 1, 0])
    with pytest.raises(NoisePriorError, match="outside"):
        build_noise_prior("decomposed", 4, value=0.2, value_T=1.5)
