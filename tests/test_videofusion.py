"""The VideoFusion denoiser: composition, stop-gradient, frame conditioning, temporal mixing."""

import torch
from diffusers import DDPMScheduler
from torch import nn

from tests.conftest import tiny_config
from vfusion.conditioning import Cond
from vfusion.config import merge_config
from vfusion.diffusion.noise import build_noise_prior
from vfusion.diffusion.process import DiffusionProcess
from vfusion.models.registry import build_model
from vfusion.models.spec import ModelSpec


def _spec(frames=5, classes=3, lam=0.5):
    process = DiffusionProcess.from_config(merge_config({"name": "x"}).diffusion)  # squaredcos_cap_v2, epsilon
    return ModelSpec(3, 16, frames, classes, process=process, noise=build_noise_prior("decomposed", frames, value=lam))


def _model(tmp_path, frames=5, classes=3, *overrides):
    torch.manual_seed(0)
    cfg = tiny_config(tmp_path, *overrides)
    return build_model(cfg, _spec(frames, classes)), cfg


def test_composition_matches_method(tmp_path):
    model, _ = _model(tmp_path)
    x = torch.randn(2, 3, 5, 16, 16)
    t = torch.tensor([10, 700])
    y = Cond(class_labels=torch.tensor([0, 0]), uncond=torch.tensor([False, True]))  # class 0; the null label (3)
    eps = model(x, t, y)
    k = 2
    b_hat = model.base(x[:, :, k], t, y)
    assert torch.allclose(eps[:, :, k], b_hat, atol=1e-6)
    sigma = (1 - DDPMScheduler(beta_schedule="squaredcos_cap_v2").alphas_cumprod[t]).sqrt().view(2, 1, 1, 1, 1)
    others = torch.tensor([0, 1, 3, 4])
    z_prime = x[:, :, others] - 0.5 ** 0.5 * sigma * b_hat.unsqueeze(2)
    r_hat = model.residual(z_prime, t, others, y)
    expected = 0.5 ** 0.5 * b_hat.unsqueeze(2) + 0.5 ** 0.5 * r_hat
    assert torch.allclose(eps[:, :, others], expected, atol=1e-5)


class _ConstantBase(nn.Module):
    """A 'base generator' whose output is a leaf parameter, to read off dε̂/db̂."""

    def __init__(self, shape):
        super().__init__()
        self.p = nn.Parameter(torch.randn(shape))
        self.num_classes = 0

    def forward(self, z, t, cond=None):
        return self.p.expand(z.shape[0], *self.p.shape) + 0 * z


def test_stop_gradient_base_gets_no_gradient_through_z_prime(tmp_path):
    model, _ = _model(tmp_path)
    model.base = _ConstantBase((3, 16, 16))
    x = torch.randn(2, 3, 5, 16, 16)
    t = torch.tensor([500, 900])
    eps = model(x, t, None)
    others = [0, 1, 3, 4]
    eps[:, :, others].sum().backward()
    # only the direct term sqrt(λ)·b̂ may contribute: 2 clips x 4 frames x sqrt(0.5)
    expected = torch.full((3, 16, 16), 2 * 4 * 0.5 ** 0.5)
    assert torch.allclose(model.base.p.grad, expected, atol=1e-5)


def test_residual_loss_alone_gives_base_no_gradient(tmp_path):
    model, _ = _model(tmp_path)
    x = torch.randn(2, 3, 5, 16, 16)
    t = torch.tensor([100, 400])
    k = 2
    b_hat = model.base(x[:, :, k], t, None).unsqueeze(2)
    lam = model.lambdas[model.other_frames].view(1, 1, -1, 1, 1)
    sigma = model.process.sigma(t).to(x.dtype).view(2, 1, 1, 1, 1)
    z_prime = x.index_select(2, model.other_frames) - lam.sqrt() * sigma * b_hat.detach()
    model.residual(z_prime, t, model.other_frames, None).pow(2).mean().backward()
    assert all(p.grad is None for p in model.base.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.residual.parameters())


def test_residual_generator_knows_the_frame_index(tmp_path):
    model, _ = _model(tmp_path)
    z = torch.randn(1, 3, 1, 16, 16)
    t = torch.tensor([300])
    a = model.residual(z, t, torch.tensor([0]), None)
    b = model.residual(z, t, torch.tensor([4]), None)
    assert not torch.allclose(a, b)


def test_class_conditioning_changes_output(tmp_path):
    model, _ = _model(tmp_path)
    x = torch.randn(1, 3, 5, 16, 16)
    t = torch.tensor([300])
    # class embeddings are randomly initialised in a fresh model, so labels matter
    assert not torch.allclose(model(x, t, Cond(class_labels=torch.tensor([0]))),
                              model(x, t, Cond(class_labels=torch.tensor([1]))))


def test_temporal_mixing_zero_init_then_mixes_frames(tmp_path):
    plain, _ = _model(tmp_path)
    mixed, _ = _model(tmp_path, 5, 3, "model.residual.temporal_mixing=true")
    mixed.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(1, 3, 5, 16, 16)
    t = torch.tensor([300])
    assert torch.allclose(plain(x, t), mixed(x, t), atol=1e-6)  # identical at init
    with torch.no_grad():
        mixed.residual.mixer.conv.weight.normal_(0, 0.5)
    x2 = x.clone()
    x2[:, :, 0] += 1.0  # change frame 0 only
    out1, out2 = mixed(x, t), mixed(x2, t)
    assert not torch.allclose(out1[:, :, 1], out2[:, :, 1], atol=1e-5)  # frame 1 now sees frame 0
    p1, p2 = plain(x, t), plain(x2, t)
    assert torch.allclose(p1[:, :, 1], p2[:, :, 1], atol=1e-6)  # without mixing it does not
