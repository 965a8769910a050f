"""Sampling: decomposed per-step noise, DDPM equivalence, determinism, guidance, diffusers parity."""

import numpy as np
import pytest
import torch
from diffusers import DDIMPipeline, DDPMScheduler, UNet2DModel

from vfusion.conditioning import Cond, label_ids
from vfusion.diffusion.factory import make_process
from vfusion.diffusion.loop_settings import LoopSettings
from vfusion.diffusion.noise import DecomposedNoise, build_noise_prior
from vfusion.diffusion.process import PROJECT_DDPM
from vfusion.diffusion.samplers import PREDICTION_TYPES, SAMPLERS
from vfusion.diffusion.sampling import guided, sample_loop
from vfusion.models.base_generator import BaseGenerator
from vfusion.models.image_unet import ImageUNet

PROCESS = make_process(PROJECT_DDPM)
NUM_CLASSES = 3  # _Toy's label table: classes 0..2, null label 3


def _process(prediction_type):
    return make_process({**PROJECT_DDPM, "prediction_type": prediction_type})


class _Toy(torch.nn.Module):
    """A per-frame denoiser (no frame interaction): frames differ only through their noise."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.3))

    def forward(self, x, t, cond=None):
        out = self.w * x
        labels = label_ids(cond, NUM_CLASSES, x.shape[0], x.device)  # the null label where unconditional
        return out + 0.1 * labels.float().view(-1, 1, 1, 1, 1)


class _Recorder(DecomposedNoise):
    def __init__(self, lambdas):
        super().__init__(lambdas)
        self.calls = 0

    def __call__(self, *a, **k):
        self.calls += 1
        return super().__call__(*a, **k)


@pytest.mark.parametrize("sampler,calls", [("ddpm", 1 + 5), ("ddim", 1), ("dpm", 1)])
def test_noise_drawn_from_decomposed_sampler(sampler, calls):
    noise = _Recorder(torch.ones(4))
    sample_loop(_Toy(), PROCESS, noise, (2, 1, 4, 4, 4), LoopSettings(sampler, 5, progress=False),
                generator=torch.Generator().manual_seed(0))
    assert noise.calls == calls


def test_stochastic_steps_keep_the_shared_structure():
    # λ ≡ 1: all frames share the noise. A per-frame model then yields identical frames only
    # if every stochastic step's fresh noise is shared too (independent step noise breaks it).
    out = sample_loop(_Toy(), PROCESS, DecomposedNoise(torch.ones(4)), (2, 1, 4, 4, 4),
                      LoopSettings("ddpm", 8, progress=False), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, out[:, :, :1].expand_as(out), atol=1e-6)
    # and the sampler is stochastic: with λ = 0 the frames differ
    out0 = sample_loop(_Toy(), PROCESS, DecomposedNoise.constant(4, 0.0), (2, 1, 4, 4, 4),
                       LoopSettings("ddpm", 8, progress=False), generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(out0[:, :, 0], out0[:, :, 1])


def test_ddpm_sampler_equals_diffusers_ddpm_step(monkeypatch):
    """Our 'ddpm' (DDIM, η = 1, injected noise) equals DDPMScheduler.step with the same noise."""
    import diffusers.schedulers.scheduling_ddpm as ddpm_mod

    steps = 10
    ours = PROCESS.scheduler("ddpm")
    ref = DDPMScheduler.from_config(PROCESS.config)
    assert torch.equal(ref.alphas_cumprod, PROCESS._train.alphas_cumprod)  # the same schedule as training
    ours.set_timesteps(steps)
    ref.set_timesteps(steps)
    assert torch.equal(ours.timesteps, ref.timesteps)
    step_kwargs = SAMPLERS["ddpm"].step_kwargs  # what sample_loop passes to the ddpm sampler's step
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 8, 8, generator=g)
    x_ref = x.clone()
    for t in ref.timesteps:
        eps = 0.5 * x + 0.1 * torch.randn(x.shape, generator=g)  # the same ε̂ goes to both
        z = torch.randn(x.shape, generator=g)
        monkeypatch.setattr(ddpm_mod, "randn_tensor", lambda *a, **k: z.clone())
        x = ours.step(eps, t, x, **step_kwargs, variance_noise=z).prev_sample
        x_ref = ref.step(eps, t, x_ref).prev_sample
        assert torch.allclose(x, x_ref, atol=1e-5), int(t)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm"])
def test_deterministic_given_seed(sampler):
    noise = DecomposedNoise.constant(4, 0.5)
    run = lambda s: sample_loop(_Toy(), PROCESS, noise, (1, 1, 4, 4, 4),  # noqa: E731
                                LoopSettings(sampler, 4, progress=False), generator=torch.Generator().manual_seed(s))
    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_guidance_formula():
    m = _Toy()
    x = torch.randn(2, 1, 4, 4, 4)
    t = torch.tensor([5, 5])
    y = Cond(class_labels=torch.tensor([1, 2]))
    null = Cond(class_labels=torch.tensor([1, 2]), uncond=torch.tensor([True, True]))  # label ids [3, 3]
    assert torch.equal(label_ids(null, NUM_CLASSES, 2, x.device), torch.tensor([3, 3]))
    cond, uncond = m(x, t, y), m(x, t, null)
    assert torch.equal(uncond, m(x, t, None))  # None = the null label
    assert torch.allclose(guided(m, x, t, y, 1.0), cond)
    assert torch.allclose(guided(m, x, t, y, 2.5), uncond + 2.5 * (cond - uncond))


# ---------------------------------------------------------------------------- against diffusers

def _tiny_unet():
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                       norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D")).eval()


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_ddim_sampling_equals_diffusers_ddim_pipeline(prediction_type):
    """The project's loop (stage-1 model, independent prior, 'ddim') is DDIMPipeline bit for bit."""
    assert set(PREDICTION_TYPES) == {"epsilon", "v_prediction", "sample"}
    unet = _tiny_unet()
    process = _process(prediction_type)
    assert process.prediction_type == prediction_type
    model = ImageUNet(BaseGenerator(unet, 0))
    ours = sample_loop(model, process, build_noise_prior("independent", 1), (2, 3, 1, 8, 8),
                       LoopSettings("ddim", 10, progress=False), generator=torch.Generator().manual_seed(0))
    assert ours.shape == (2, 3, 1, 8, 8)
    pipe = DDIMPipeline(unet=unet, scheduler=process.scheduler("ddim"))
    pipe.set_progress_bar_config(disable=True)
    assert pipe.scheduler.config.prediction_type == prediction_type
    run = lambda output_type: pipe(batch_size=2, generator=torch.Generator().manual_seed(0),  # noqa: E731
                                   num_inference_steps=10, eta=0.0, output_type=output_type).images
    post = (ours[:, :, 0] / 2 + 0.5).clamp(0, 1)  # DDIMPipeline's post-processing
    ref_pt = run("pt")
    assert torch.equal(post, ref_pt)
    ref_np = run("np")
    ours_np = post.permute(0, 2, 3, 1).numpy()
    assert ours_np.shape == ref_np.shape == (2, 8, 8, 3)
    assert np.array_equal(ours_np, ref_np)
    assert post.std() > 0  # not a degenerate (constant) image


def _float64_case(prediction_type):
    process = _process(prediction_type)
    g = torch.Generator().manual_seed(0)
    shape = (6, 3, 2, 4, 4)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    pred = torch.randn(shape, generator=g, dtype=torch.float64)
    t = torch.tensor([10, 50, 250, 500, 750, 900])  # away from the ends of the schedule
    x_t = process.add_noise(x, eps, t)
    assert x_t.dtype == torch.float64
    return process, x, eps, pred, t, x_t


def _close(a, b, tol=1e-10):
    assert a.dtype == b.dtype == torch.float64
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    assert float((a - b).norm() / b.norm()) < tol


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_eps_conversions_are_exact_inverses(prediction_type):
    process, x, eps, pred, t, x_t = _float64_case(prediction_type)
    _close(process.to_eps(process.from_eps(eps, x_t, t), x_t, t), eps)
    _close(process.from_eps(process.to_eps(pred, x_t, t), x_t, t), pred)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_target_converts_back_to_eps_exactly(prediction_type):
    process, x, eps, _, t, x_t = _float64_case(prediction_type)
    _close(process.to_eps(process.target(x, eps, t), x_t, t), eps)
    _close(process.from_eps(eps, x_t, t), process.target(x, eps, t))
