"""Noise priors: empirical vs theoretical frame correlation, unit variance, the α = 0 / λ ≡ 0 limits
(bit for bit the independent prior, in a sampling loop too), config errors, sampling with each prior."""

import pytest
import torch

from vfusion.config import ConfigError
from vfusion.experiment import resolve_config
from vfusion.diffusion.factory import make_process
from vfusion.diffusion.loop_settings import LoopSettings
from vfusion.diffusion.noise import IndependentNoise, NoisePriorError, build_noise_prior, keyframe_lambdas, \
    noise_prior_from_config
from vfusion.diffusion.priors import NOISE_PRIORS
from vfusion.diffusion.process import PROJECT_DDPM
from vfusion.diffusion.sampling import sample_loop
from vfusion.errors import UserError

T = 6
CASES = [
    ("independent", {}),
    ("decomposed", {"value": 0.5}),
    ("decomposed", {"schedule": "linear", "value": 0.9, "min_value": 0.1}),
    ("pyoco_mixed", {"alpha": 1.0}),
    ("pyoco_mixed", {"alpha": 0.4}),
    ("pyoco_progressive", {"alpha": 2.0}),
    ("pyoco_progressive", {"alpha": 0.7}),
]
ZERO_CASES = [("decomposed", {"value": 0.0}), ("pyoco_mixed", {"alpha": 0.0}), ("pyoco_progressive", {"alpha": 0.0})]


def _draw(prior, seed=0, shape=(4096, 2, T, 4, 4)):  # 4096 · 2 · 16 = 131072 samples per frame
    return prior(shape, generator=torch.Generator().manual_seed(seed))


def _per_frame(eps):
    return eps.permute(2, 0, 1, 3, 4).reshape(eps.shape[2], -1).double()  # (T, N)


def test_every_registered_prior_is_covered():
    assert {name for name, _ in CASES} == set(NOISE_PRIORS)


@pytest.mark.parametrize("name,params", CASES)
def test_empirical_correlation_matches_theory_and_unit_variance(name, params):
    prior = build_noise_prior(name, T, **params)
    theory = prior.correlation()
    assert theory.dtype == torch.float64 and theory.shape == (T, T)
    assert torch.equal(theory, theory.T) and torch.equal(theory.diagonal(), torch.ones(T, dtype=torch.float64))
    frames = _per_frame(_draw(prior))
    assert torch.allclose(frames.var(dim=1), torch.ones(T, dtype=torch.float64), atol=0.02)
    assert torch.allclose(frames.mean(dim=1), torch.zeros(T, dtype=torch.float64), atol=0.02)
    assert (torch.corrcoef(frames) - theory).abs().max() < 0.02


def test_theoretical_correlations_are_the_papers():
    i, j = torch.meshgrid(torch.arange(T), torch.arange(T), indexing="ij")
    off = i != j
    lam = build_noise_prior("decomposed", T, value=0.3).lambdas
    want = (lam[:, None] * lam[None, :]).sqrt()
    assert torch.allclose(build_noise_prior("decomposed", T, value=0.3).correlation()[off], want[off])
    for a in (0.5, 1.0, 2.0):
        mixed = build_noise_prior("pyoco_mixed", T, alpha=a).correlation()
        assert torch.allclose(mixed[off], torch.full_like(mixed[off], a * a / (1 + a * a)))
        rho = a / (1 + a * a) ** 0.5
        prog = build_noise_prior("pyoco_progressive", T, alpha=a).correlation()
        assert torch.allclose(prog, rho ** (i - j).abs().double())
    assert torch.equal(build_noise_prior("independent", T).correlation(), torch.eye(T, dtype=torch.float64))


def test_unset_alpha_takes_pyocos_defaults():
    assert build_noise_prior("pyoco_mixed", T).alpha == 1.0
    assert build_noise_prior("pyoco_progressive", T, alpha=None).alpha == 2.0
    assert noise_prior_from_config(resolve_config({"name": "x"}, overrides=[
        "model.name=video_unet", "noise.prior=pyoco_mixed", "noise.alpha=0.5"]).noise, T).alpha == 0.5


def test_independent_is_plain_randn_and_draws_as_before():
    shape = (2, 3, T, 5, 4)
    for seed in (3, 4):
        assert torch.equal(IndependentNoise(T)(shape, generator=torch.Generator().manual_seed(seed)),
                           torch.randn(shape, generator=torch.Generator().manual_seed(seed)))
    # then one frame-shaped draw (as when independent was the decomposed prior at λ ≡ 0): runs sample as before
    g, ref = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    IndependentNoise(T)(shape, generator=g)
    torch.randn(shape, generator=ref), torch.randn((2, 3, 1, 5, 4), generator=ref)
    assert torch.equal(g.get_state(), ref.get_state())
    eps, base, residual = IndependentNoise(T).sample(shape)
    assert base is None and residual is eps


@pytest.mark.parametrize("name,params", ZERO_CASES)
def test_zero_correlation_limits_are_independent_bit_for_bit(name, params):
    shape = (2, 3, T, 5, 4)
    prior, ref = build_noise_prior(name, T, **params), build_noise_prior("independent", T)
    g, g_ref = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    for _ in range(3):
        assert torch.equal(prior(shape, generator=g), ref(shape, generator=g_ref))
    assert torch.equal(g.get_state(), g_ref.get_state())


def test_sample_parts():
    shape = (2, 1, T, 3, 3)
    eps, base, residual = build_noise_prior("pyoco_mixed", T, alpha=1.0).sample(
        shape, generator=torch.Generator().manual_seed(0))
    assert base.shape == (2, 1, 1, 3, 3) and residual.shape == shape
    assert torch.allclose(eps, (0.5 ** 0.5) * (base + residual), atol=1e-6)  # a = c = 1/sqrt(2) at α = 1
    eps, base, residual = build_noise_prior("pyoco_progressive", T, alpha=2.0).sample(
        shape, generator=torch.Generator().manual_seed(0))
    a, c = 2 / 5 ** 0.5, 1 / 5 ** 0.5
    assert base is None
    assert torch.allclose(eps[:, :, 1:], a * eps[:, :, :-1] + c * residual[:, :, 1:], atol=1e-6)


@pytest.mark.parametrize("name", ["pyoco_mixed", "pyoco_progressive"])
@pytest.mark.parametrize("alpha", [-0.5, float("nan"), float("inf")])
def test_bad_alpha_is_refused(name, alpha):
    with pytest.raises(NoisePriorError, match="noise.alpha"):
        build_noise_prior(name, T, alpha=alpha)


# ---------------------------------------------------------------------------- config

@pytest.mark.parametrize("prior", ["independent", "pyoco_mixed", "pyoco_progressive"])
def test_videofusion_needs_the_decomposed_prior(prior):
    with pytest.raises(UserError) as err:
        resolve_config({"name": "x"}, overrides=[f"noise.prior={prior}"])
    msg = str(err.value)
    assert "\n" not in msg and "noise.prior" in msg and "noise.prior=decomposed" in msg and prior in msg


@pytest.mark.parametrize("model", ["video_unet", "dit"])
@pytest.mark.parametrize("prior", list(NOISE_PRIORS))
def test_baselines_take_every_prior(model, prior):
    cfg = resolve_config({"name": "x"}, overrides=[f"model.name={model}", f"noise.prior={prior}"])
    assert noise_prior_from_config(cfg.noise, int(cfg.data.num_frames)).num_frames == cfg.data.num_frames


def test_alpha_only_with_a_pyoco_prior_and_in_range():
    with pytest.raises(ConfigError, match="noise.alpha"):
        resolve_config({"name": "x"}, overrides=["noise.alpha=1.0"])  # decomposed does not read it
    with pytest.raises(ConfigError, match="noise.alpha"):
        resolve_config({"name": "x"}, overrides=["model.name=dit", "noise.prior=pyoco_mixed", "noise.alpha=-1"])


def test_videofusion_model_refuses_a_prior_without_keyframe_base():
    assert keyframe_lambdas(build_noise_prior("decomposed", T)).shape == (T,)
    for name in ("independent", "pyoco_mixed"):
        with pytest.raises(UserError, match="noise.prior=decomposed"):
            keyframe_lambdas(build_noise_prior(name, T))


# ---------------------------------------------------------------------------- sampling

PROCESS = make_process(PROJECT_DDPM)


class _TinyVideoModel(torch.nn.Module):
    """A 3-D convolution: mixes neighbouring frames and pixels."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv3d(2, 2, 3, padding=1)

    def forward(self, x, t, cond=None):
        return 0.1 * self.conv(x)


def _run(prior, seed=0, shape=(2, 2, 4, 4, 4)):
    return sample_loop(_TinyVideoModel(), PROCESS, prior, shape, LoopSettings("ddpm", 5, progress=False),
                       generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name,params", CASES)
def test_stochastic_sampler_runs_with_every_prior(name, params):
    prior = build_noise_prior(name, 4, **params)
    out = _run(prior)
    assert out.shape == (2, 2, 4, 4, 4) and torch.isfinite(out).all()
    assert torch.equal(out, _run(prior)) and not torch.equal(out, _run(prior, seed=1))


@pytest.mark.parametrize("name,params", ZERO_CASES)
def test_zero_correlation_sampling_is_independent_sampling(name, params):
    assert torch.equal(_run(build_noise_prior(name, 4, **params)), _run(build_noise_prior("independent", 4)))
