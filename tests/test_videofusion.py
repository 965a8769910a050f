"""The VideoFusion denoiser: composition, stop-gradient, frame conditioning, the residual's temporal layers."""

import pytest
import torch
from diffusers import DDPMScheduler
from torch import nn

from tests.conftest import tiny_config
from vfusion.conditioning import Cond
from vfusion.config import ConfigError
from vfusion.diffusion.noise import build_noise_prior
from vfusion.diffusion.factory import make_process
from vfusion.diffusion.process import PROJECT_DDPM
from vfusion.models.registry import build_model
from vfusion.models.residual_generator import ResidualGenerator
from vfusion.models.spec import ModelSpec


def _spec(frames=5, classes=3, lam=0.5):
    process = make_process(PROJECT_DDPM)  # squaredcos_cap_v2, epsilon
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


# ---- temporal layers of the residual generator (model.residual.temporal) ------------------------

RES = dict(in_channels=3, sample_size=16, num_frames=5, num_classes=3, frame_embed_dim=8,
           block_out_channels=(8, 16), norm_num_groups=4)


def _residual_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2, 3, 4, 16, 16, generator=g)  # the 4 non-key frames of a 5-frame clip
    return z, torch.tensor([300, 20]), torch.tensor([0, 1, 3, 4]), Cond(class_labels=torch.tensor([2, 0]))


def _plain_and_temporal(kind, resolutions=None):
    torch.manual_seed(0)
    plain = ResidualGenerator(**RES)
    mixed = ResidualGenerator(**RES, temporal=kind, temporal_resolutions=resolutions)
    missing, unexpected = mixed.load_state_dict(plain.state_dict(), strict=False)  # the same spatial weights
    assert not unexpected and missing and all(k.startswith("temporal_layers.") for k in missing)
    return plain, mixed


def _step_on_temporal_layers(model):
    """One Adam step on the temporal parameters only (the zero-initialised output layer moves)."""
    opt = torch.optim.Adam(model.temporal_layers.parameters(), lr=1e-2)
    z, t, idx, y = _residual_inputs(1)
    model(z, t, idx, y).square().mean().backward()
    opt.step()


@pytest.mark.parametrize("kind, resolutions", [("conv", None), ("attention", None), ("conv", (16, 8))])
def test_temporal_layers_start_bit_identical_to_none_then_mix_frames(kind, resolutions):
    plain, mixed = _plain_and_temporal(kind, resolutions)
    z, t, idx, y = _residual_inputs()
    with torch.no_grad():
        assert torch.equal(mixed(z, t, idx, y), plain(z, t, idx, y))  # bit for bit at initialisation
    _step_on_temporal_layers(mixed)
    z2 = z.clone()
    z2[:, :, 0] += 1.0  # change the first non-key frame only
    with torch.no_grad():
        out, out2 = mixed(z, t, idx, y), mixed(z2, t, idx, y)
        p, p2 = plain(z, t, idx, y), plain(z2, t, idx, y)
    assert (out - p).abs().max() > 1e-4  # the step changed the output
    assert (out2[:, :, 1:] - out[:, :, 1:]).abs().max() > 1e-5  # the other frames see frame 0 now
    assert torch.equal(p2[:, :, 1:], p[:, :, 1:])  # per-frame ψ: they do not


@pytest.mark.parametrize("kind", ["conv", "attention"])
def test_temporal_key_round_trips_through_save_and_from_pretrained(kind, tmp_path):
    _, mixed = _plain_and_temporal(kind)
    _step_on_temporal_layers(mixed)  # non-zero temporal weights, so loading them is checked too
    mixed.save_pretrained(str(tmp_path / "residual"))
    loaded = ResidualGenerator.from_pretrained(str(tmp_path / "residual"), low_cpu_mem_usage=False)
    assert loaded.config.temporal == kind and loaded.config.temporal_heads == 4
    assert "temporal_mixing" not in loaded.config
    z, t, idx, y = _residual_inputs()
    with torch.no_grad():
        assert torch.equal(loaded(z, t, idx, y), mixed(z, t, idx, y))


def test_a_copy_runs_its_own_temporal_layers():
    """EMA keeps a deepcopy: its hook must call the copy's mixer, not the original's."""
    import copy

    _, mixed = _plain_and_temporal("conv")
    ema = copy.deepcopy(mixed)
    z, t, idx, y = _residual_inputs()
    with torch.no_grad():
        before = mixed(z, t, idx, y)
    _step_on_temporal_layers(ema)
    with torch.no_grad():
        assert torch.equal(mixed(z, t, idx, y), before)
        assert (ema(z, t, idx, y) - before).abs().max() > 1e-4


def test_temporal_config_key_reaches_the_model_and_the_old_name_reads_as_conv(tmp_path):
    for overrides, kind in [((), "none"), (("model.residual.temporal=attention",), "attention"),
                            (("model.residual.temporal_mixing=true",), "conv")]:
        model, _ = _model(tmp_path, 5, 3, *overrides)
        assert model.residual.config.temporal == kind
        assert len(model.residual.temporal_layers) == (kind != "none")
    with pytest.raises(ConfigError, match="model.residual.temporal.*none, conv, attention"):
        _model(tmp_path, 5, 3, "model.residual.temporal=lstm")
    with pytest.raises(ConfigError, match="temporal_mixing"):
        _model(tmp_path, 5, 3, "model.residual.temporal=attention", "model.residual.temporal_mixing=true")


@pytest.mark.parametrize("resolutions, units", [(None, 1), ((16,), 3), ((8,), 5), ((16, 8), 8)])
def test_temporal_resolutions_place_a_layer_after_every_unit_of_those_sizes(resolutions, units):
    """At 16x16 with two levels: down block 0 and up block 1 (1 + 2 resnets) run at 16x16; down block 1,
    the middle block and up block 0 (1 + 2 + 2 resnets) at 8x8. null: the middle block's output only."""
    _, mixed = _plain_and_temporal("conv", resolutions)
    assert len(mixed.temporal_layers) == units
    seen = []
    for hook in mixed.temporal_layers:
        hook.mixer.register_forward_pre_hook(lambda mod, args: seen.append(tuple(args[0].shape[-2:])))
    with torch.no_grad():
        mixed(*_residual_inputs())
    assert len(seen) == units
    assert set(seen) == ({(8, 8)} if resolutions is None else {(r, r) for r in resolutions})


def test_temporal_resolutions_must_be_sizes_the_residual_has(tmp_path):
    with pytest.raises(ConfigError, match=r"model.residual.temporal_resolutions.*\[4\].*\[16, 8\]"):
        tiny_config(tmp_path, "model.residual.temporal=conv", "model.residual.temporal_resolutions=[16,4]")
    tiny_config(tmp_path, "model.residual.temporal_resolutions=[4]")   # no temporal layers: nothing to place
    with pytest.raises(ConfigError, match=r"temporal_resolutions.*\[4\]"):   # built directly (e.g. a pretrained
        ResidualGenerator(**RES, temporal="conv", temporal_resolutions=(4,))   # base skips the config check)

