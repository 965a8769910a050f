"""Rectified flow as a process kind: formulas, oracle sampling, VideoFusion's composition, diffusers parity,
training, refused configs."""

import json

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UNet2DModel
from torch import nn

from tests.conftest import tiny_config
from vfusion.diffusion.flow import FlowProcess
from vfusion.diffusion.loop_settings import LoopSettings
from vfusion.diffusion.noise import DecomposedNoise, build_noise_prior
from vfusion.diffusion.factory import make_process
from vfusion.diffusion.process import DiffusionProcess, ProcessError, read_config
from vfusion.diffusion.sampling import sample_loop
from vfusion.errors import UserError
from vfusion.models.videofusion import VideoFusion

T = 1000
LAMBDAS = [0.2, 0.7, 1.0, 0.4, 0.0]  # five frames, keyframe 2; λ differs per frame, both ends included


def _flow(**kw):
    return make_process({"_class_name": "FlowMatchEulerDiscreteScheduler", **kw})


def _clip(shape=(2, 3, 5, 4, 4), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _one_line_user_error(excinfo):
    assert isinstance(excinfo.value, UserError)
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


# ---------------------------------------------------------------------------- formulas

@pytest.mark.parametrize("num_train_timesteps", [T, 50])
def test_add_noise_target_and_to_eps_match_numpy(num_train_timesteps):
    process = _flow(num_train_timesteps=num_train_timesteps)
    assert process.kind == "flow" and process.prediction_type == "flow_prediction"
    assert process.num_train_timesteps == num_train_timesteps
    rng = np.random.default_rng(0)
    x, eps, v = (rng.standard_normal((4, 3, 2, 4, 4)) for _ in range(3))
    t = np.array([0.0, 0.3, 0.71, 0.999]) * num_train_timesteps
    s = (t / num_train_timesteps).reshape(-1, 1, 1, 1, 1)
    tt = torch.from_numpy(t)
    z = process.add_noise(torch.from_numpy(x), torch.from_numpy(eps), tt)
    np.testing.assert_allclose(z.numpy(), (1 - s) * x + s * eps, rtol=0, atol=1e-12)
    np.testing.assert_allclose(process.target(torch.from_numpy(x), torch.from_numpy(eps), tt).numpy(), eps - x,
                               rtol=0, atol=0)
    np.testing.assert_allclose(process.to_eps(torch.from_numpy(v), z, tt).numpy(), z.numpy() + (1 - s) * v,
                               rtol=0, atol=1e-12)
    # the velocity target converts to the noise it was made from
    np.testing.assert_allclose(process.to_eps(process.target(torch.from_numpy(x), torch.from_numpy(eps), tt), z,
                                              tt).numpy(), eps, rtol=0, atol=1e-12)
    assert process.alpha(tt).dtype == process.sigma(tt).dtype == torch.float64
    np.testing.assert_allclose(process.sigma(tt).numpy(), s.ravel(), rtol=0, atol=0)
    np.testing.assert_allclose(process.alpha(tt).numpy(), 1 - s.ravel(), rtol=0, atol=0)


def test_to_eps_and_from_eps_are_inverses_away_from_pure_noise():
    process = _flow()
    x_t, eps, v = _clip(seed=1), _clip(seed=2), _clip(seed=3)
    t = torch.tensor([0.0, 900.0], dtype=torch.float64)  # σ = 0 and 0.9
    torch.testing.assert_close(process.to_eps(process.from_eps(eps, x_t, t), x_t, t), eps, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(process.from_eps(process.to_eps(v, x_t, t), x_t, t), v, rtol=1e-12, atol=1e-12)


def test_training_timesteps_are_float_and_uniform_in_sigma():
    process = _flow()
    t = process.sample_timesteps(20000, generator=torch.Generator().manual_seed(0))
    assert t.shape == (20000,) and t.dtype == torch.float32
    assert float(t.min()) >= 0 and float(t.max()) < T
    assert (t != t.round()).float().mean() > 0.99                      # continuous, not integer steps
    sigma = t.double() / T
    assert abs(float(sigma.mean()) - 0.5) < 0.01 and abs(float(sigma.var()) - 1 / 12) < 0.005
    # the shift moves only the sampling grid: training σ stays uniform
    shifted = _flow(shift=3.0).sample_timesteps(20000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(shifted, t)


# ---------------------------------------------------------------------------- sampling with an oracle

def _velocity_oracle(x):
    """The exact velocity when the data is always ``x``: v = (z − x)/σ at every z."""

    def model(z, t, cond=None):
        sigma = (t.double() / T).view(-1, 1, 1, 1, 1)
        return ((z.double() - x) / sigma).to(z.dtype)

    return model


@pytest.mark.parametrize("sampler", ["euler", "ddim"])
@pytest.mark.parametrize("prior", ["independent", "decomposed"])
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_oracle_velocity_recovers_the_data(sampler, prior, shift):
    process = _flow(shift=shift)
    x = _clip(seed=4).float().double()
    noise = build_noise_prior("independent", 5) if prior == "independent" else DecomposedNoise.constant(5, 0.5)
    out = sample_loop(_velocity_oracle(x), process, noise, x.shape, LoopSettings(sampler, 10, progress=False),
                      generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32
    assert torch.allclose(out.double(), x, atol=1e-5)


def test_wrong_velocity_sign_does_not_recover_the_data():
    # the oracle test has teeth: the DDPM-style sign convention (x − z)/σ walks away from the data
    x = _clip(seed=4).float().double()
    oracle = _velocity_oracle(x)
    out = sample_loop(lambda z, t, c=None: -oracle(z, t, c), _flow(), DecomposedNoise.constant(5, 0.5), x.shape,
                      LoopSettings("euler", 10, progress=False), generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(out.double(), x, atol=1e-2)


# ---------------------------------------------------------------------------- VideoFusion composition

class _OracleBase(nn.Module):
    """φ(z^k, t): the keyframe's exact velocity."""

    def __init__(self, x, keyframe):
        super().__init__()
        self.x_key = x[:, :, keyframe]
        self.num_classes = 0

    def forward(self, z_key, t, cond=None):
        sigma = (t.double() / T).view(-1, 1, 1, 1)
        return ((z_key.double() - self.x_key) / sigma).to(z_key.dtype)


class _OracleResidual(nn.Module):
    """ψ(z'^i, t, i) = (z'^i − x^i)/σ: the exact velocity of the flow z' from x^i to sqrt(1 − λ^i)·r^i."""

    def __init__(self, x):
        super().__init__()
        self.x = x

    def forward(self, z_prime, t, frame_index, cond=None):
        sigma = (t.double() / T).view(-1, 1, 1, 1, 1)
        return ((z_prime.double() - self.x[:, :, frame_index]) / sigma).to(z_prime.dtype)


def _oracle_videofusion(x, process):
    return VideoFusion(_OracleBase(x, 2), _OracleResidual(x), torch.tensor(LAMBDAS), process)


def test_videofusion_with_oracle_networks_predicts_the_exact_velocity():
    process = _flow()
    x = _clip(seed=5)
    model = _oracle_videofusion(x, process).double()
    t = torch.tensor([50.0, 1000.0], dtype=torch.float64)  # σ = 0.05 and σ = 1, where sampling starts
    z = _clip(seed=6)                                       # any point: the oracle is exact everywhere
    exact = (z - x) / (t / T).view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(model(z, t), exact, rtol=1e-10, atol=1e-10)
    # on the forward process with decomposed noise, that is the training target ε − x, frame by frame
    eps = DecomposedNoise(torch.tensor(LAMBDAS)).sample(x.shape, generator=torch.Generator().manual_seed(7),
                                                        dtype=torch.float64).eps
    t = torch.tensor([300.0, 800.0], dtype=torch.float64)
    z = process.add_noise(x, eps, t)
    torch.testing.assert_close(model(z, t), process.target(x, eps, t), rtol=1e-10, atol=1e-10)


def test_compose_is_the_velocity_split_not_the_eps_route():
    process = _flow()
    b_hat, r_hat, z = _clip((2, 3, 1, 4, 4), 8), _clip((2, 3, 4, 4, 4), 9), _clip((2, 3, 4, 4, 4), 10)
    lam = torch.tensor([0.2, 0.7, 0.4, 0.0], dtype=torch.float64).view(1, 1, -1, 1, 1)
    t = torch.tensor([1000.0, 400.0], dtype=torch.float64)
    out = process.compose(b_hat, r_hat, lam, z, t)
    torch.testing.assert_close(out, lam.sqrt() * b_hat + r_hat, rtol=0, atol=0)
    assert torch.isfinite(out).all()  # defined at σ = 1


def test_sampling_through_oracle_videofusion_recovers_the_data():
    process = _flow()
    x = _clip(seed=11).float().double()
    model = _oracle_videofusion(x, process)
    out = sample_loop(model, process, DecomposedNoise(torch.tensor(LAMBDAS)), x.shape,
                      LoopSettings("euler", 10, progress=False), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out.double(), x, atol=1e-5)


# ---------------------------------------------------------------------------- against diffusers

def _tiny_unet():
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                       norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D")).eval()


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_euler_loop_equals_a_plain_diffusers_loop(shift):
    """The project's loop on a float-timestep UNet equals a hand-written FlowMatchEulerDiscreteScheduler loop
    bit for bit: the library scheduler is used unchanged."""
    from vfusion.models.base_generator import BaseGenerator
    from vfusion.models.image_unet import ImageUNet

    unet = _tiny_unet()
    process = _flow(shift=shift)
    noise = DecomposedNoise.constant(1, 0.5)
    shape = (2, 3, 1, 8, 8)
    ours = sample_loop(ImageUNet(BaseGenerator(unet, 0)), process, noise, shape,
                       LoopSettings("euler", 8, progress=False), generator=torch.Generator().manual_seed(0))

    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=T, shift=shift)  # built independently
    scheduler.set_timesteps(8)
    assert scheduler.timesteps.dtype == torch.float32 and (scheduler.timesteps != scheduler.timesteps.round()).any()
    z = noise(shape, generator=torch.Generator().manual_seed(0))[:, :, 0]
    with torch.no_grad():
        for t in scheduler.timesteps:
            v = unet(z, t.expand(z.shape[0])).sample
            z = scheduler.step(v, t, z).prev_sample
    assert torch.equal(ours[:, :, 0], z)
    assert z.std() > 0


def test_scheduler_and_saved_config_are_diffusers_flow_match(tmp_path):
    process = _flow(shift=2.0, num_train_timesteps=500)
    for sampler in ("euler", "ddim"):
        s = process.scheduler(sampler)
        assert type(s) is FlowMatchEulerDiscreteScheduler and s.config.shift == 2.0
    out = process.save_pretrained(tmp_path)
    saved = json.loads(out.read_text())
    assert saved["_class_name"] == "FlowMatchEulerDiscreteScheduler" and saved["num_train_timesteps"] == 500
    assert FlowMatchEulerDiscreteScheduler.from_pretrained(tmp_path).config.shift == 2.0  # diffusers reads it
    again = make_process(read_config(tmp_path))  # the kind the saved config describes
    assert isinstance(again, FlowProcess) and again.to_json_dict() == process.to_json_dict()
    with pytest.raises(ProcessError):
        DiffusionProcess(read_config(tmp_path))  # a flow config is not read as a VP schedule
    assert isinstance(FlowProcess(read_config(out)), FlowProcess)
    vp = DiffusionProcess({})
    vp.save_pretrained(tmp_path / "vp")
    assert type(DiffusionProcess(read_config(tmp_path / "vp"))) is DiffusionProcess
    assert type(make_process(read_config(tmp_path / "vp"))) is DiffusionProcess
    with pytest.raises(ProcessError):
        FlowProcess(read_config(tmp_path / "vp"))


def test_make_process_picks_the_kind():
    assert type(make_process({"kind": "flow", "num_train_timesteps": 100})) is FlowProcess
    assert type(make_process({"_class_name": "FlowMatchHeunDiscreteScheduler", "shift": 1.5})) is FlowProcess
    assert type(make_process({"_class_name": "DDIMScheduler"})) is DiffusionProcess
    assert type(make_process({"kind": "ddpm"})) is DiffusionProcess
    flow = make_process({"kind": "flow", "num_train_timesteps": 100})
    assert "kind" not in flow.config and "kind" not in flow.to_json_dict()


# ---------------------------------------------------------------------------- training

@pytest.mark.parametrize("model_name", ["videofusion", "video_unet"])
def test_training_steps_with_the_flow_process(tmp_path, model_name):
    from vfusion.models.registry import build_model
    from vfusion.models.spec import ModelSpec
    from vfusion.training.lit_module import VideoDiffusionModule

    torch.manual_seed(0)
    process = _flow()
    noise = build_noise_prior("decomposed", 4, value=0.5)
    cfg = tiny_config(tmp_path, f"model.name={model_name}")
    model = build_model(cfg, ModelSpec(3, 16, 4, 2, process=process, noise=noise))
    module = VideoDiffusionModule(model, process, noise, optim={"lr": 1e-3, "betas": (0.9, 0.999),
                                                                "weight_decay": 0.0, "warmup_steps": 0})
    opt = module.configure_optimizers()["optimizer"]
    x = torch.rand(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    y = torch.tensor([0, 1])
    for _ in range(2):
        opt.zero_grad()
        terms = module.diffusion_loss(x, y)
        assert set(terms) == {"total", "base", "residual"}
        assert all(torch.isfinite(v) for v in terms.values())
        terms["total"].backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)
        opt.step()


# ---------------------------------------------------------------------------- refused configs

@pytest.mark.parametrize("key,words", [("use_dynamic_shifting", "sequence length"), ("invert_sigmas", "1 − σ"),
                                       ("stochastic_sampling", "decomposed")])
def test_configs_the_project_cannot_train_with_are_refused(key, words):
    with pytest.raises(ProcessError) as excinfo:
        make_process({"_class_name": "FlowMatchEulerDiscreteScheduler", key: True})
    msg = _one_line_user_error(excinfo)
    assert key in msg and words in msg and f"{key}=false" in msg


def test_other_refused_flow_configs():
    for bad in ({"kind": "flow", "prediction_type": "epsilon"}, {"kind": "flow", "shift": 0.0},
                {"kind": "flow", "num_train_timesteps": 0}, {"kind": "rectified"},
                {"kind": "ddpm", "_class_name": "FlowMatchEulerDiscreteScheduler"},
                {"_class_name": "DPMSolverMultistepScheduler", "use_flow_sigmas": True, "flow_shift": 3.0}):
        with pytest.raises(ProcessError) as excinfo:
            make_process(bad)
        _one_line_user_error(excinfo)
    # a flow config handed to the VP process directly would silently become a DDIM schedule
    with pytest.raises(ProcessError) as excinfo:
        DiffusionProcess(_flow().config)
    assert "make_process" in _one_line_user_error(excinfo)


def test_samplers_are_checked_against_the_process_kind():
    flow = _flow()
    for sampler in ("ddpm", "dpm"):
        with pytest.raises(ProcessError) as excinfo:
            flow.scheduler(sampler)
        assert "sample.sampler=euler" in _one_line_user_error(excinfo)
    with pytest.raises(ProcessError) as excinfo:  # through the sampling loop, before any noise is drawn
        sample_loop(lambda z, t, c=None: z, flow, DecomposedNoise.constant(1, 0.5), (1, 1, 1, 2, 2),
                    LoopSettings("ddpm", 2, progress=False))
    _one_line_user_error(excinfo)
    with pytest.raises(ProcessError) as excinfo:
        DiffusionProcess({}).scheduler("euler")
    assert "sample.sampler=ddim" in _one_line_user_error(excinfo)
