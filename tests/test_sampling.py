"""Sampling: decomposed per-step noise, DDPM equivalence, determinism, guidance."""

import pytest
import torch
from diffusers import DDPMScheduler

from vfusion.config import merge_config
from vfusion.diffusion.noise import DecomposedNoise
from vfusion.diffusion.process import sampling_scheduler, train_scheduler
from vfusion.diffusion.sampling import guided_eps, sample

CFG = merge_config({"name": "s"}).diffusion


class _Toy(torch.nn.Module):
    """A per-frame denoiser (no frame interaction): frames differ only through their noise."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.3))

    def forward(self, x, t, labels=None):
        out = self.w * x
        if labels is not None:
            out = out + 0.1 * labels.float().view(-1, 1, 1, 1, 1)
        return out


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
    sample(_Toy(), CFG, noise, (2, 1, 4, 4, 4), sampler=sampler, steps=5,
           generator=torch.Generator().manual_seed(0), progress=False)
    assert noise.calls == calls


def test_stochastic_steps_keep_the_shared_structure():
    # λ ≡ 1: all frames share the noise. A per-frame model then yields identical frames only
    # if every stochastic step's fresh noise is shared too (independent step noise breaks it).
    out = sample(_Toy(), CFG, DecomposedNoise(torch.ones(4)), (2, 1, 4, 4, 4), sampler="ddpm", steps=8,
                 generator=torch.Generator().manual_seed(0), progress=False)
    assert torch.allclose(out, out[:, :, :1].expand_as(out), atol=1e-6)
    # and the sampler is stochastic: with λ = 0 the frames differ
    out0 = sample(_Toy(), CFG, DecomposedNoise.constant(4, 0.0), (2, 1, 4, 4, 4), sampler="ddpm", steps=8,
                  generator=torch.Generator().manual_seed(0), progress=False)
    assert not torch.allclose(out0[:, :, 0], out0[:, :, 1])


def test_ddpm_sampler_equals_diffusers_ddpm_step(monkeypatch):
    """Our 'ddpm' (DDIM, η = 1, injected noise) equals DDPMScheduler.step with the same noise."""
    import diffusers.schedulers.scheduling_ddpm as ddpm_mod

    steps = 10
    ours = sampling_scheduler(CFG, "ddpm")
    ref = DDPMScheduler(**{k: v for k, v in train_scheduler(CFG).config.items() if not k.startswith("_")})
    ours.set_timesteps(steps)
    ref.set_timesteps(steps)
    assert torch.equal(ours.timesteps, ref.timesteps)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 8, 8, generator=g)
    x_ref = x.clone()
    for t in ref.timesteps:
        eps = 0.5 * x + 0.1 * torch.randn(x.shape, generator=g)  # the same ε̂ goes to both
        z = torch.randn(x.shape, generator=g)
        monkeypatch.setattr(ddpm_mod, "randn_tensor", lambda *a, **k: z.clone())
        x = ours.step(eps, t, x, eta=1.0, use_clipped_model_output=True, variance_noise=z).prev_sample
        x_ref = ref.step(eps, t, x_ref).prev_sample
        assert torch.allclose(x, x_ref, atol=1e-5), int(t)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm"])
def test_deterministic_given_seed(sampler):
    noise = DecomposedNoise.constant(4, 0.5)
    run = lambda s: sample(_Toy(), CFG, noise, (1, 1, 4, 4, 4), sampler=sampler, steps=4,  # noqa: E731
                           generator=torch.Generator().manual_seed(s), progress=False)
    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_guidance_formula():
    m = _Toy()
    x = torch.randn(2, 1, 4, 4, 4)
    t = torch.tensor([5, 5])
    y = torch.tensor([1, 2])
    cond, uncond = m(x, t, y), m(x, t, torch.tensor([3, 3]))
    assert torch.allclose(guided_eps(m, x, t, y, 3, 1.0), cond)
    assert torch.allclose(guided_eps(m, x, t, y, 3, 2.5), uncond + 2.5 * (cond - uncond))
