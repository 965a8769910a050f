"""FreeInit: the Butterworth low-pass and the frequency mix against diffusers' FreeInitMixin, what the
filter keeps and removes, the refinement loop in sample_loop (VP and flow), the config keys and the
pipeline's defaults."""

import math

import pytest
import torch
from diffusers.pipelines.free_init_utils import FreeInitMixin

from vfusion.config import ConfigError
from vfusion.experiment import resolve_config
from vfusion.diffusion.freeinit import FreeInitError, FreeInitTask, butterworth_low_pass, mix_frequencies, reinitialise
from vfusion.diffusion.loop_settings import LoopSettings
from vfusion.diffusion.noise import build_noise_prior
from vfusion.diffusion.factory import make_process
from vfusion.diffusion.process import PROJECT_DDPM
from vfusion.diffusion.sampling import sample_loop

DIMS = (-3, -2, -1)
VP = make_process(PROJECT_DDPM)
FLOW = make_process({"_class_name": "FlowMatchEulerDiscreteScheduler"})


def _diffusers_mask(shape, d_s, d_t, order):
    """diffusers' mask for latents (B, C, T, H, W), as its pipelines build it: (1, C, T, H, W), centred."""
    return FreeInitMixin()._get_free_init_freq_filter((1, *shape[1:]), "cpu", "butterworth", order, d_s, d_t)


# even sizes: diffusers' grid 2k/n − 1 is then the centred FFT grid (see vfusion/diffusion/freeinit.py)
PARAMS = [((1, 2, 4, 8, 8), 0.25, 0.25, 4), ((1, 3, 6, 8, 12), 0.4, 0.1, 2), ((1, 1, 16, 4, 6), 0.25, 0.5, 1)]


@pytest.mark.parametrize("shape,d_s,d_t,order", PARAMS)
def test_mask_equals_diffusers(shape, d_s, d_t, order):
    ours = butterworth_low_pass(shape[2:], d_s, d_t, order)
    assert ours.shape == shape[2:] and ours.dtype == torch.float32 and ours[0, 0, 0] == 1.0
    ref = _diffusers_mask(shape, d_s, d_t, order)
    assert (torch.fft.fftshift(ours, dim=DIMS) - ref).abs().max() <= 1e-6  # diffusers lays it out centred


@pytest.mark.parametrize("shape,d_s,d_t,order", PARAMS)
def test_frequency_mix_equals_diffusers(shape, d_s, d_t, order):
    g = torch.Generator().manual_seed(0)
    x, noise = torch.randn((2, *shape[1:]), generator=g), torch.randn((2, *shape[1:]), generator=g)
    ours = mix_frequencies(x, noise, butterworth_low_pass(shape[2:], d_s, d_t, order))
    ref = FreeInitMixin()._apply_freq_filter(x, noise, _diffusers_mask(shape, d_s, d_t, order))
    assert (ours - ref).abs().max() <= 1e-6


def test_reinitialisation_equals_diffusers_free_init_step():
    """One FreeInit step of diffusers (x_0 diffused to T − 1 with the initial noise, fresh randn for the high
    frequencies) is ours with the independent prior's draw from the same generator."""
    shape, steps = (2, 4, 8, 8, 8), 10
    g = torch.Generator().manual_seed(1)
    init, x0 = torch.randn(shape, generator=g), torch.randn(shape, generator=g).clamp(-1, 1)
    mixin = FreeInitMixin()
    mixin.enable_free_init(num_iters=2, order=4, spatial_stop_frequency=0.25, temporal_stop_frequency=0.25)
    mixin.scheduler = VP.scheduler("ddim")
    mixin._apply_free_init(init, 0, steps, "cpu", torch.float32, torch.Generator().manual_seed(5))  # keeps init
    ref, _ = mixin._apply_free_init(x0, 1, steps, "cpu", torch.float32, torch.Generator().manual_seed(5))
    fresh = build_noise_prior("independent", 8)(shape, generator=torch.Generator().manual_seed(5))
    t = torch.full((2,), VP.num_train_timesteps - 1, dtype=torch.long)
    ours = reinitialise(x0, init, fresh, VP, t, FreeInitTask(2).mask(8, 8, 8))
    assert (ours - ref).abs().max() <= 1e-6


@pytest.mark.parametrize("size", [(5, 7, 9), (4, 6, 8)])
def test_mask_is_one_at_zero_frequency_and_symmetric(size):
    """M(f) = M(−f) on every size (odd ones too), so mixing two real clips gives a real clip."""
    mask = butterworth_low_pass(size, 0.25, 0.25, 4)
    assert mask[0, 0, 0] == 1.0 and mask.max() == 1.0
    neg = [(-torch.arange(n)) % n for n in size]  # the index of −f
    assert torch.equal(mask, mask[neg[0]][:, neg[1]][:, :, neg[2]])
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn((1, 1, *size), generator=g), torch.randn((1, 1, *size), generator=g)
    low = torch.fft.fftn(x, dim=DIMS) * mask + torch.fft.fftn(y, dim=DIMS) * (1 - mask)
    assert torch.fft.ifftn(low, dim=DIMS).imag.abs().max() < 1e-6


def test_low_pass_keeps_slow_components_and_removes_fast_ones():
    t, h, w = 16, 16, 16
    tt, hh, ww = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    const = torch.full((1, 1, t, h, w), 0.7)
    slow = torch.cos(2 * math.pi * tt / t).view(1, 1, t, h, w)              # 1 cycle per clip: r = 0.5
    fast = torch.cos(math.pi * (tt + hh + ww)).view(1, 1, t, h, w)          # Nyquist in t, h and w
    mask = butterworth_low_pass((t, h, w), 0.25, 0.25, 4)
    low = lambda x: mix_frequencies(x, torch.zeros_like(x), mask)  # noqa: E731
    assert torch.allclose(low(const), const, atol=1e-6)
    assert torch.allclose(low(slow), slow / (1 + 0.5 ** 8), atol=1e-5)     # 0.996 of it is kept
    assert low(fast).abs().max() < 1e-5                                     # 1 / (1 + 4^8·3^4) of it is left
    mixed = mix_frequencies(const + fast, 3 * fast, mask)  # low from one source, high from the other
    assert torch.allclose(mixed, const + 3 * fast, atol=1e-4)


@pytest.mark.parametrize("kwargs", [{"iters": -1}, {"order": 0}, {"d_s": 0.0}, {"d_t": 1.5}, {"iters": 1.5}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(FreeInitError):
        FreeInitTask(**kwargs)


# ---------------------------------------------------------------------------- the loop

class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv3d(2, 2, 3, padding=1)

    def forward(self, x, t, cond=None):
        return 0.2 * self.conv(x)


SHAPE = (2, 2, 4, 8, 8)


def _loop(process, sampler, prior, **kw):
    return sample_loop(_Tiny(), process, prior, SHAPE, LoopSettings(sampler, 4, progress=False), **kw)


@pytest.mark.parametrize("process,sampler", [(VP, "ddim"), (VP, "ddpm"), (VP, "dpm"), (FLOW, "euler")])
def test_free_init_loop_is_passes_from_reinitialised_noise(process, sampler):
    prior = build_noise_prior("pyoco_progressive", 4, alpha=1.0)
    fi = FreeInitTask(iters=2, d_s=0.4, d_t=0.4)
    calls = []
    out = _loop(process, sampler, prior, tasks=(fi,), generator=torch.Generator().manual_seed(0),
                callback=calls.append)
    assert calls == list(range(3 * 4))
    # by hand: a pass, then twice x_0 -> reinitialise (initial noise, a fresh draw) -> a pass from there
    g = torch.Generator().manual_seed(0)
    init = prior(SHAPE, generator=g)
    x = _loop(process, sampler, prior, latents=init, generator=g)
    t0 = process.scheduler(sampler)
    t0.set_timesteps(4)
    t0 = process.model_timesteps(t0.timesteps[0], SHAPE[0], "cpu")
    for _ in range(2):
        start = reinitialise(x, init, prior(SHAPE, generator=g), process, t0, fi.mask(*SHAPE[2:]))
        x = _loop(process, sampler, prior, latents=start, generator=g)
    assert torch.equal(out, x)
    plain = _loop(process, sampler, prior, generator=torch.Generator().manual_seed(0))
    assert torch.equal(_loop(process, sampler, prior, tasks=(FreeInitTask(iters=0),),
                             generator=torch.Generator().manual_seed(0)), plain)
    assert not torch.allclose(out, plain)


# ---------------------------------------------------------------------------- config and pipeline

@pytest.mark.parametrize("override", ["sample.free_init_iters=-1", "sample.free_init_order=0",
                                      "sample.free_init_ds=0", "sample.free_init_dt=2"])
def test_bad_free_init_keys_name_the_key(override):
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        resolve_config({"name": "x"}, overrides=[override])


def test_pipeline_takes_free_init_from_the_run_and_from_arguments(tmp_path):
    from tests.conftest import tiny_config, tiny_spec
    from vfusion.training.runner import build_module

    cfg = tiny_config(tmp_path, "model.name=video_unet", "noise.prior=pyoco_mixed", "sample.free_init_iters=1",
                      "sample.free_init_ds=0.5")
    module = build_module(cfg, tiny_spec())
    module.ema = None
    pipe = module.pipeline()
    assert pipe.video_config["sample"] == {**pipe.video_config["sample"], "free_init_iters": 1, "free_init_order": 4,
                                           "free_init_ds": 0.5, "free_init_dt": 0.25}

    def run(**kw):
        steps = []
        out = pipe(batch_size=1, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt",
                   progress=False, callback=steps.append, **kw).frames
        return out, len(steps)

    refined, n = run()
    assert n == 4  # (iters + 1) passes of 2 steps
    plain, n0 = run(tasks=(FreeInitTask(iters=0),))
    assert n0 == 2 and not torch.equal(refined, plain)
    assert run(tasks=(FreeInitTask(iters=2, d_s=0.25),))[1] == 6
