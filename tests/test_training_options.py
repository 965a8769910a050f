"""Training levers: min-SNR loss weights, the cosine learning-rate schedule, the EMA's own warm-up."""

import numpy as np
import pytest
import torch

from vfusion.experiment import resolve_config
from vfusion.diffusion.factory import make_process
from vfusion.diffusion.process import PROJECT_DDPM
from vfusion.training.lit_module import lr_factor


@pytest.mark.parametrize("pred", ["epsilon", "v_prediction", "sample"])
def test_min_snr_weights_follow_the_published_formula(pred):
    process = make_process({**PROJECT_DDPM, "prediction_type": pred})
    t = torch.tensor([0, 10, 200, 500, 999])
    w = process.loss_weights(t, "min_snr", gamma=5.0).double().numpy()
    ac = process.alphas_cumprod.double().numpy()[t.numpy()]  # independent numpy computation
    snr = ac / (1 - ac)
    want = {"epsilon": np.minimum(snr, 5) / snr, "v_prediction": np.minimum(snr, 5) / (snr + 1),
            "sample": np.minimum(snr, 5)}[pred]
    np.testing.assert_allclose(w, want, rtol=1e-6)
    assert process.loss_weights(t, "none") is None


def test_min_snr_weighted_loss_equals_the_x_space_loss_times_min_snr():
    """For ε-prediction, weight · ||ε̂ − ε||² = min(SNR, γ) · ||x̂ − x||² (the definition of min-SNR)."""
    process = make_process(PROJECT_DDPM)
    g = torch.Generator().manual_seed(0)
    x, eps, eps_hat = (torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
    t = torch.tensor([5, 100, 400, 900])
    z = process.add_noise(x, eps, t)
    a, s = process.alpha(t).view(-1, 1, 1, 1), process.sigma(t).view(-1, 1, 1, 1)
    x_hat = (z - s * eps_hat) / a
    lhs = process.loss_weights(t, "min_snr", 5.0).double() * (eps_hat - eps).pow(2).mean(dim=(1, 2, 3))
    snr = (a / s).pow(2).flatten()
    rhs = snr.clamp(max=5.0) * (x_hat - x).pow(2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(lhs, rhs, rtol=1e-5, atol=1e-8)


def test_cosine_schedule_warms_up_then_decays_to_zero():
    f = lr_factor(10, "cosine", 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0)
    assert lr_factor(10, "constant", 110)(100) == 1.0


def test_config_checks_the_new_keys():
    from vfusion.config import ConfigError

    with pytest.raises(ConfigError, match="train.loss_weighting"):
        resolve_config({"name": "x"}, overrides=["train.loss_weighting=p2"])
    with pytest.raises(ConfigError, match="rectified flow"):
        resolve_config({"name": "x"}, overrides=["train.loss_weighting=min_snr", "diffusion.kind=flow"])


def test_the_ema_decay_ramps_up_in_a_short_run():
    """diffusers' EMAModel already warms up: decay n / (n + 9) after n updates, so a 600-step run's EMA is not
    dominated by its first weights (why the project has no separate EMA warm-up switch)."""
    from diffusers.training_utils import EMAModel

    ema = EMAModel([torch.nn.Parameter(torch.zeros(1))], decay=0.995)
    assert ema.get_decay(20) == pytest.approx(20 / 29)  # after n updates: n / (n + 9)
    assert ema.get_decay(600) == pytest.approx(600 / 609)
