"""Sora's tasks: known frames (replacement, RePaint jumps), SDEdit and DDIM inversion in the sampling loop,
and the task functions on trained tiny pipelines of every model."""

import dataclasses

import pytest
import torch

from vfusion.diffusion.edit import EditError, EditTask, invert, steps_to_run
from vfusion.diffusion.factory import make_process
from vfusion.diffusion.known import KnownFramesError, KnownFramesTask, renoise
from vfusion.diffusion.loop_settings import LoopSettings
from vfusion.diffusion.noise import DecomposedNoise, IndependentNoise
from vfusion.diffusion.process import PROJECT_DDPM
from vfusion.diffusion.sampling import sample_loop
from vfusion.inference import tasks

SHAPE = (2, 3, 5, 4, 4)


def _process(kind="ddpm", prediction_type="epsilon", **kw):
    if kind == "flow":
        return make_process({"_class_name": "FlowMatchEulerDiscreteScheduler", **kw})
    return make_process({**PROJECT_DDPM, "prediction_type": prediction_type, **kw})


def _clip(seed=0, shape=SHAPE, scale=0.8):
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1) * scale


class _Net(torch.nn.Module):
    """A fixed nonlinear denoiser that mixes frames (so known frames influence the others)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, z, t, cond=None):
        self.calls.append(z.clone())
        return 0.5 * torch.tanh(z + z.mean(dim=2, keepdim=True)) + 1e-4 * t.float().view(-1, 1, 1, 1, 1)


# ---------------------------------------------------------------------------- known frames

SAMPLER_CASES = [("ddpm", "ddim", "epsilon"), ("ddpm", "ddim", "v_prediction"), ("ddpm", "ddim", "sample"),
                 ("ddpm", "ddpm", "epsilon"), ("ddpm", "dpm", "v_prediction"), ("flow", "euler", None)]


@pytest.mark.parametrize("kind,sampler,prediction_type", SAMPLER_CASES)
def test_the_oracle_trajectory_ends_at_the_known_frames_without_pasting(kind, sampler, prediction_type, monkeypatch):
    """The replacement alone (no final paste) brings the known frames back to their values."""
    process = _process(kind, prediction_type or "epsilon")
    x = _clip()
    known = KnownFramesTask.frames(x, [0, 2])
    monkeypatch.setattr(KnownFramesTask, "paste", lambda self, z: z)
    out = sample_loop(_Net(), process, DecomposedNoise.constant(5, 0.5), SHAPE,
                      LoopSettings(sampler, 8, progress=False), generator=torch.Generator().manual_seed(0),
                      tasks=(known,))
    torch.testing.assert_close(out[:, :, [0, 2]], x[:, :, [0, 2]], atol=2e-4, rtol=0)
    assert (out[:, :, [1, 3, 4]] - x[:, :, [1, 3, 4]]).abs().max() > 0.1  # the others are generated


def test_known_frames_are_their_forward_noised_versions_with_the_clips_base_noise():
    """VideoFusion image-to-video: at every step the keyframe the network sees is the image noised to that
    level with the clip's shared base noise b (the prior's draw from the same seed)."""
    process = _process()
    prior = DecomposedNoise.constant(5, 0.5)
    x = _clip()
    net = _Net()
    sample_loop(net, process, prior, SHAPE, LoopSettings("ddim", 6, progress=False),
                generator=torch.Generator().manual_seed(3), tasks=(KnownFramesTask.frames(x, [prior.keyframe]),))
    base = prior.sample(SHAPE, generator=torch.Generator().manual_seed(3)).base
    scheduler = process.scheduler("ddim")
    scheduler.set_timesteps(6)
    k = prior.keyframe
    for z, t in zip(net.calls, scheduler.timesteps):
        tt = process.model_timesteps(t, 2, "cpu")
        expected = process.add_noise(x[:, :, k:k + 1], base, tt)
        torch.testing.assert_close(z[:, :, k:k + 1], expected, atol=2e-5, rtol=0)


def test_stochastic_steps_noise_known_and_unknown_frames_with_one_prior_draw():
    """With the ancestral sampler the known frames' noise is the prior's joint draw: with a frame-blind
    denoiser whose prediction for the known frames is the oracle anyway, knowing frames changes nothing."""
    process = _process()
    x = _clip()
    prior = DecomposedNoise.constant(5, 0.7)

    def oracle_everywhere(z, t, cond=None):
        return KnownFramesTask(x, torch.ones(5, dtype=torch.bool)).oracle(torch.zeros_like(z), z, t, process)

    free = sample_loop(oracle_everywhere, process, prior, SHAPE, LoopSettings("ddpm", 5, progress=False),
                       generator=torch.Generator().manual_seed(1))
    given = sample_loop(oracle_everywhere, process, prior, SHAPE, LoopSettings("ddpm", 5, progress=False),
                        generator=torch.Generator().manual_seed(1), tasks=(KnownFramesTask.frames(x, [1]),))
    torch.testing.assert_close(given, free, atol=1e-5, rtol=0)


@pytest.mark.parametrize("sampler", ["ddim", "dpm"])
def test_resampling_jumps(sampler):
    process = _process()
    x = _clip()
    net = _Net()
    steps, jumps = 5, 2
    out = sample_loop(net, process, IndependentNoise(5), SHAPE, LoopSettings(sampler, steps, progress=False),
                      generator=torch.Generator().manual_seed(0),
                      tasks=(KnownFramesTask.frames(x, [0], jumps=jumps),))
    assert len(net.calls) == (steps - 1) * (1 + jumps) + 1  # no jump after the last step
    assert torch.equal(out[:, :, 0], x[:, :, 0])
    again = sample_loop(_Net(), process, IndependentNoise(5), SHAPE, LoopSettings(sampler, steps, progress=False),
                        generator=torch.Generator().manual_seed(0),
                        tasks=(KnownFramesTask.frames(x, [0], jumps=jumps),))
    assert torch.equal(out, again)
    plain = sample_loop(_Net(), process, IndependentNoise(5), SHAPE, LoopSettings(sampler, steps, progress=False),
                        generator=torch.Generator().manual_seed(0), tasks=(KnownFramesTask.frames(x, [0]),))
    assert not torch.equal(out, plain)


@pytest.mark.parametrize("kind", ["ddpm", "flow"])
def test_renoise_is_the_forward_process_between_two_levels(kind):
    """Noising x to level s, then from s to t, has the marginal of noising x to t: check mean and std."""
    process = _process(kind)
    s, t = (torch.tensor([200]), torch.tensor([700])) if kind == "ddpm" else (torch.tensor([200.0]),
                                                                                 torch.tensor([700.0]))
    x = torch.full((1, 1, 1, 200, 200), 0.6, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    z_s = process.add_noise(x, torch.randn(x.shape, generator=g, dtype=torch.float64), s)
    z_t = renoise(z_s, s, t, process, torch.randn(x.shape, generator=g, dtype=torch.float64))
    a, sig = float(process.alpha(t)), float(process.sigma(t))
    assert abs(float(z_t.mean()) - a * 0.6) < 0.01 and abs(float(z_t.std()) - sig) < 0.01


def test_known_frame_errors():
    x = _clip()
    with pytest.raises(KnownFramesError, match="outside 0..4"):
        KnownFramesTask.frames(x, [5])
    with pytest.raises(KnownFramesError, match="every frame is known"):
        KnownFramesTask.frames(x, range(5)).check(SHAPE)
    with pytest.raises(KnownFramesError, match="jumps"):
        KnownFramesTask.frames(x, [0], jumps=-1)


# ---------------------------------------------------------------------------- SDEdit and inversion

@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sdedit_strength_zero_returns_the_input_and_one_is_unconditional_sampling(sampler):
    process, prior = _process(), DecomposedNoise.constant(5, 0.5)
    x = _clip()
    settings = LoopSettings(sampler, 6, progress=False)
    out0 = sample_loop(_Net(), process, prior, SHAPE, settings, generator=torch.Generator().manual_seed(0),
                       tasks=(EditTask(x, 0.0),))
    assert torch.equal(out0, x)
    uncond = sample_loop(_Net(), process, prior, SHAPE, settings, generator=torch.Generator().manual_seed(0))
    out1 = sample_loop(_Net(), process, prior, SHAPE, settings, generator=torch.Generator().manual_seed(0),
                       tasks=(EditTask(x, 1.0),))
    assert torch.equal(out1, uncond)
    net = _Net()
    half = sample_loop(net, process, prior, SHAPE, settings, generator=torch.Generator().manual_seed(0),
                       tasks=(EditTask(x, 0.5),))
    assert len(net.calls) == steps_to_run(6, 0.5) == 3
    # it starts from the input noised with the prior's draw to the first timestep it runs
    scheduler = process.scheduler("ddim")
    scheduler.set_timesteps(6)
    t0 = process.model_timesteps(scheduler.timesteps[3], 2, "cpu")
    eps = prior(SHAPE, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(net.calls[0], process.add_noise(x, eps, t0), atol=1e-6, rtol=0)
    assert (half - x).abs().mean() < (uncond - x).abs().mean()


def test_strength_is_checked():
    for bad in (-0.1, 1.5, float("nan"), "a"):
        with pytest.raises(EditError, match="strength"):
            steps_to_run(10, bad)
        with pytest.raises(EditError, match="strength"):
            EditTask(_clip(), bad)


class _Constant(torch.nn.Module):
    """A prediction that does not depend on z: the deterministic sampler's steps are then exactly invertible."""

    def forward(self, z, t, cond=None):
        return torch.full_like(z, 0.05)


@pytest.mark.parametrize("kind,prediction_type,spacing", [("ddpm", "epsilon", "leading"),
                                                          ("ddpm", "epsilon", "trailing"),
                                                          ("flow", None, None)])
def test_ddim_inversion_then_sampling_returns_the_input(kind, prediction_type, spacing):
    """Inversion lands on the level the edit's sampling starts from, on the same grid: with a z-independent
    prediction each step is an exact affine map, so sampling undoes the inversion to float error (a grid
    off by one step would not)."""
    extra = {} if kind == "flow" else {"timestep_spacing": spacing, "clip_sample": False}
    process = _process(kind, prediction_type or "epsilon", **extra)
    x = _clip(scale=0.5).double()
    sampler = "euler" if kind == "flow" else "ddim"
    out = sample_loop(_Constant(), process, IndependentNoise(5), SHAPE,
                      LoopSettings(sampler, 10, dtype=torch.float64, progress=False),
                      tasks=(EditTask(x, 0.6, inversion=True),))
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)
    # and inversion does move the clip: it is not the input
    z = invert(lambda z, t: _Constant()(z, t), process, x, 10, 6, "cpu")
    assert (z - x).abs().mean() > 0.01


# ---------------------------------------------------------------------------- the task functions

def _train(tmp_path, model):
    from tests.conftest import tiny_config, tiny_loader, tiny_spec
    from vfusion.training.runner import fit

    run = tmp_path / model
    cfg = tiny_config(run, "train.max_steps=1", "model.dit.patch_size=4", f"model.name={model}")
    fit(cfg, stage="video", train_loader=tiny_loader(), spec_info=tiny_spec())
    from vfusion.inference.generate import load_pipeline

    return load_pipeline(run, "cpu")


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    root = tmp_path_factory.mktemp("task_runs")
    return {m: _train(root, m) for m in ("videofusion", "video_unet", "dit")}


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _image(seed=0):
    return _clip(seed, shape=(3, 16, 16), scale=0.9)


@pytest.mark.parametrize("model", ["videofusion", "video_unet", "dit"])
def test_image_to_video_as_the_first_frame_for_every_model(pipes, model):
    pipe = pipes[model]
    img = _image()
    out = tasks.image_to_video(pipe, img, at="first", batch_size=2, num_inference_steps=3, generator=_gen(),
                               output_type="pt", progress=False)
    assert out.frames.shape == (2, 3, 4, 16, 16)
    assert torch.equal(out.frames[:, :, 0], img.expand(2, -1, -1, -1))
    again = tasks.image_to_video(pipe, img, at="first", batch_size=2, num_inference_steps=3, generator=_gen(),
                                 output_type="pt", progress=False)
    assert torch.equal(out.frames, again.frames)
    if model != "videofusion":
        with pytest.raises(tasks.TaskError, match="only VideoFusion has a keyframe"):
            tasks.image_to_video(pipe, img, at="keyframe", num_inference_steps=2, progress=False)


def test_videofusion_image_to_video_puts_the_image_at_the_keyframe(pipes):
    pipe = pipes["videofusion"]
    img = _image(1)
    out = tasks.image_to_video(pipe, img, num_inference_steps=3, generator=_gen(), output_type="np", progress=False)
    frames = out.frames  # (1, T, H, W, C) in [0, 1]
    expected = ((img.permute(1, 2, 0) + 1) / 2).numpy()
    assert abs(frames[0, 4 // 2] - expected).max() < 1e-6  # the middle frame k = T // 2 is the image


def test_extension_length_and_seam(pipes):
    pipe = pipes["videofusion"]
    video = tasks.image_to_video(pipe, _image(), num_inference_steps=2, generator=_gen(), output_type="pt",
                                 progress=False).frames
    out = tasks.extend(pipe, video, context=2, chunks=3, num_inference_steps=2, generator=_gen(), output_type="pt",
                       progress=False).frames
    assert out.shape[2] == 4 + 3 * (4 - 2)
    assert torch.equal(out[:, :, :4], video)             # the input comes first, unchanged
    back = tasks.extend(pipe, video, context=1, direction="backward", num_inference_steps=2, generator=_gen(),
                        output_type="pt", progress=False).frames
    assert back.shape[2] == 4 + 3 and torch.equal(back[:, :, -4:], video)
    # at each seam the new chunk was generated knowing the frames just before it: its known frames are the
    # previous chunk's last frames, and its first new frame follows them in the output
    seen = []
    call = type(pipe).__call__

    def spy(self, *a, **k):
        out = call(self, *a, **k)
        known = k["tasks"][0]
        seen.append((known.x.clone(), known.mask.clone(), out.frames.clone()))
        return out

    type(pipe).__call__ = spy
    try:
        out2 = tasks.extend(pipe, video, context=2, chunks=2, num_inference_steps=2, generator=_gen(),
                            output_type="pt", progress=False).frames
    finally:
        type(pipe).__call__ = call
    for j, (known, mask, chunk) in enumerate(seen):
        assert (mask == torch.tensor([True, True, False, False])).all()
        start = 2 + 2 * j                                # where chunk j's context sits in the output
        assert torch.equal(known[:, :, :2], out2[:, :, start:start + 2])
        assert torch.equal(chunk, out2[:, :, start:start + 4])
    with pytest.raises(tasks.TaskError, match="fewer than the 3 context frames"):
        tasks.extend(pipe, video[:, :, :2], context=3, num_inference_steps=2, progress=False)
    with pytest.raises(tasks.TaskError, match="context must be between 1 and 3"):
        tasks.extend(pipe, video, context=4, num_inference_steps=2, progress=False)


def test_extension_can_keep_the_shared_base_noise(pipes, monkeypatch):
    pipe = pipes["videofusion"]
    seen = []
    call = type(pipe).__call__

    def spy(self, *a, **k):
        seen.append(k["latents"].clone())
        return call(self, *a, **k)

    monkeypatch.setattr(type(pipe), "__call__", spy)
    video = _clip(shape=(1, 3, 4, 16, 16))
    k = 4 // 2
    tasks.extend(pipe, video, context=1, chunks=3, reuse_base=True, num_inference_steps=2, generator=_gen(),
                 progress=False)
    assert all(torch.equal(s[:, :, k], seen[0][:, :, k]) for s in seen[1:])
    assert not torch.equal(seen[1][:, :, 0], seen[0][:, :, 0])  # fresh residuals
    seen.clear()
    tasks.extend(pipe, video, context=1, chunks=2, num_inference_steps=2, generator=_gen(), progress=False)
    assert not torch.equal(seen[1][:, :, k], seen[0][:, :, k])
    monkeypatch.undo()
    other = pipes["video_unet"]
    monkeypatch.setattr(other, "_spec", dataclasses.replace(other.spec(), noise=IndependentNoise(4)))
    with pytest.raises(tasks.TaskError, match="shared base noise"):
        tasks.extend(other, video, context=1, reuse_base=True, num_inference_steps=2, progress=False)


def test_interpolation_keeps_both_ends(pipes):
    pipe = pipes["dit"]
    a, b = _image(0), _image(1)
    out = tasks.interpolate(pipe, a, b, num_inference_steps=3, generator=_gen(), output_type="pt",
                            progress=False).frames
    assert out.shape == (1, 3, 4, 16, 16) and torch.equal(out[0, :, 0], a) and torch.equal(out[0, :, -1], b)
    two = _clip(shape=(1, 3, 2, 16, 16))
    with pytest.raises(tasks.TaskError, match="leave nothing to generate"):
        tasks.interpolate(pipe, two, two, num_inference_steps=2, progress=False)


def test_edit_through_the_pipeline(pipes):
    pipe = pipes["videofusion"]
    video = _clip(shape=(2, 3, 4, 16, 16))
    out0 = tasks.edit(pipe, video, strength=0.0, class_labels=[1, 0], num_inference_steps=4, output_type="pt",
                      progress=False).frames
    assert torch.equal(out0, video.clamp(-1, 1))
    out1 = tasks.edit(pipe, video, strength=1.0, class_labels=[1, 0], num_inference_steps=4, generator=_gen(),
                      output_type="pt", progress=False).frames
    uncond = pipe(class_labels=[1, 0], num_inference_steps=4, generator=_gen(), output_type="pt", progress=False).frames
    assert torch.equal(out1, uncond)
    inv = tasks.edit(pipe, video, strength=0.5, inversion=True, num_inference_steps=4, output_type="pt",
                     progress=False).frames
    assert inv.shape == video.shape and torch.isfinite(inv).all()
    with pytest.raises(EditError, match="strength"):
        tasks.edit(pipe, video, strength=1.5, num_inference_steps=2, progress=False)


def test_inputs_of_another_size_are_refused_with_resize_none(pipes):
    from vfusion.errors import UserError

    pipe = pipes["videofusion"]
    with pytest.raises(UserError, match="resize it to 16x16"):
        tasks.image_to_video(pipe, torch.zeros(3, 32, 32), num_inference_steps=2, progress=False, resize="none")
    with pytest.raises(UserError, match="resize it to 16x16"):
        tasks.edit(pipe, torch.zeros(1, 3, 4, 8, 8), num_inference_steps=2, progress=False, resize="none")
    with pytest.raises(UserError, match="resize it to 16x16, or fit it with resize='crop'"):
        pipe(tasks=(EditTask(torch.zeros(1, 3, 4, 8, 8), 0.0),), num_inference_steps=2, progress=False,
             resize="none")
    with pytest.raises(UserError, match="model's 4 frames"):
        tasks.edit(pipe, torch.zeros(1, 3, 3, 16, 16), num_inference_steps=2, progress=False)
    with pytest.raises(UserError, match="resize 'fit' is not one of crop, stretch, none"):
        tasks.edit(pipe, torch.zeros(1, 3, 4, 8, 8), num_inference_steps=2, progress=False, resize="fit")


def _cropped(x, size=16):
    """``x`` (..., H, W): the center square of the short side, bilinear and antialiased to ``size`` (torch alone)."""
    h, w = x.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return _stretched(x[..., top:top + side, left:left + side], size)


def _stretched(x, size=16):
    """``x`` (..., C, H, W) resized whole to ``size`` x ``size``, bilinear and antialiased."""
    lead = x.shape[:-3]
    y = torch.nn.functional.interpolate(x.reshape(-1, *x.shape[-3:]), size=(size, size), mode="bilinear",
                                        antialias=True, align_corners=False)
    return y.reshape(*lead, *y.shape[-3:])


def test_the_pipeline_call_crops_inputs_of_any_size_as_training_does(pipes):
    pipe = pipes["videofusion"]
    video = _clip(shape=(1, 3, 4, 27, 61))                # height 27, width 61: odd and not square
    expected = _cropped(video.transpose(1, 2)).transpose(1, 2)     # every frame (B, T, C, H, W)
    assert expected.shape == (1, 3, 4, 16, 16)
    out = pipe(tasks=(EditTask(video, 0.0),), num_inference_steps=2, output_type="pt", progress=False).frames
    assert torch.allclose(out, expected.clamp(-1, 1), atol=1e-6)  # strength 0 returns the fitted clip
    mask = torch.tensor([True, False, False, False])
    out = pipe(tasks=(KnownFramesTask(video, mask),), num_inference_steps=2, generator=_gen(), output_type="pt",
               progress=False).frames
    assert out.shape == (1, 3, 4, 16, 16) and torch.allclose(out[:, :, 0], expected[:, :, 0], atol=1e-6)
    # and it is the training clips' transform: the same frames as uint8 through the data side agree to a level
    from vfusion.data.clips import center_crop_resize, to_clip

    levels = ((video[0] + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0)    # (T, H, W, C)
    trained = to_clip(center_crop_resize(levels, 16))
    assert (trained - expected[0]).abs().max() <= 1.5 / 127.5


def test_tasks_fit_images_and_videos_of_any_size(pipes):
    pipe = pipes["video_unet"]
    image = _clip(shape=(3, 27, 61), scale=0.9)
    out = tasks.image_to_video(pipe, image, at="first", batch_size=2, num_inference_steps=2, generator=_gen(),
                               output_type="pt", progress=False).frames
    assert out.shape == (2, 3, 4, 16, 16) and torch.allclose(out[:, :, 0], _cropped(image).expand(2, -1, -1, -1),
                                                                 atol=1e-6)
    out = tasks.image_to_video(pipe, image, at="first", resize="stretch", num_inference_steps=2, generator=_gen(),
                               output_type="pt", progress=False).frames
    assert torch.allclose(out[0, :, 0], _stretched(image), atol=1e-6)
    assert not torch.allclose(_stretched(image), _cropped(image), atol=0.1)   # the two modes differ
    video = _clip(shape=(1, 3, 4, 40, 24))                # portrait
    out = tasks.extend(pipe, video, context=2, num_inference_steps=2, generator=_gen(), output_type="pt",
                       progress=False).frames
    assert out.shape == (1, 3, 6, 16, 16)
    assert torch.allclose(out[:, :, :4], _cropped(video.transpose(1, 2)).transpose(1, 2), atol=1e-6)
