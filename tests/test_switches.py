"""GPU switches that exist on CPU too: bf16-mixed, gradient checkpointing, channels-last, fused AdamW, compile."""

import json

import pytest
import torch

from tests.conftest import tiny_config, tiny_loader, tiny_spec
from vfusion.config import ConfigError
from vfusion.training.runner import build_module, fit
from vfusion.training.switches import apply_switches, checkpointed_networks, use_fused_adamw

MODELS = {
    "videofusion": ["model.residual.temporal=conv"],
    "video_unet": ["model.video_unet.temporal_layers=both", "model.video_unet.attention_heads=2"],
    "dit": ["model.dit.size=tiny", "model.dit.hidden_size=16", "model.dit.depth=2", "model.dit.num_heads=2",
            "model.dit.patch_size=4"],
}


def _module(tmp_path, name, *overrides):
    cfg = tiny_config(tmp_path / "run", f"model.name={name}", *MODELS.get(name, []), *overrides)
    torch.manual_seed(0)
    return cfg, build_module(cfg, tiny_spec())


def _grads(module, batch, seed=0):
    module.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = module.diffusion_loss(*batch)["total"]
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in module.model.named_parameters() if p.grad is not None}


def _batch():
    return next(iter(tiny_loader()))


def _make_temporal_layers_live(module):
    """The temporal layers start at zero (identity, and no gradient reaches most of them): give them
    small random weights so a recomputation that skipped them would change the gradients."""
    from vfusion.models.temporal import TemporalMixer

    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in module.model.modules():
            if isinstance(m, TemporalMixer):
                for p in m.parameters():
                    p.add_(0.05 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradient_checkpointing_gives_the_same_gradients_and_recomputes(tmp_path, name):
    _, plain = _module(tmp_path, name)
    _, ckpt = _module(tmp_path, name)
    _make_temporal_layers_live(plain)
    ckpt.load_state_dict(plain.state_dict())
    cfg = tiny_config(tmp_path / "run", f"model.name={name}", *MODELS[name], "train.gradient_checkpointing=[all]")
    applied = apply_switches(ckpt, cfg.train)
    assert applied["gradient_checkpointing"] == list(ckpt.model.pipeline_components())
    calls = []
    original = torch.utils.checkpoint.checkpoint

    def counting(*a, **k):
        calls.append(1)
        return original(*a, **k)

    torch.utils.checkpoint.checkpoint = counting
    try:
        loss_c, grads_c = _grads(ckpt, _batch())
    finally:
        torch.utils.checkpoint.checkpoint = original
    loss_p, grads_p = _grads(plain, _batch())
    assert calls, "no block went through torch.utils.checkpoint"
    torch.testing.assert_close(loss_c, loss_p)
    assert grads_c.keys() == grads_p.keys()
    for k in grads_p:
        torch.testing.assert_close(grads_c[k], grads_p[k], rtol=1e-4, atol=1e-6, msg=k)


def test_checkpointing_recomputes_the_temporal_layers_with_their_frames(tmp_path):
    """The video UNet's temporal mixers run inside checkpointed units: the backward pass's recomputation
    must run them again (with the forward pass's frame count), or the gradients would be wrong."""
    from vfusion.models.temporal import TemporalMixer

    _, module = _module(tmp_path, "video_unet")
    _make_temporal_layers_live(module)
    cfg = tiny_config(tmp_path / "run", "model.name=video_unet", "train.gradient_checkpointing=[denoiser]")
    apply_switches(module, cfg.train)
    mixers = [m for m in module.model.modules() if isinstance(m, TemporalMixer)]
    frames_seen = []
    for m in mixers:
        m.register_forward_pre_hook(lambda mod, args: frames_seen.append(args[1]))  # returns None
    _grads(module, _batch())
    # the mixers of checkpointed units ran twice (forward, then the recomputation; diffusers checkpoints
    # the resnets, not every attention unit), each time with the clip's 4 frames
    assert len(frames_seen) > len(mixers) and set(frames_seen) == {4}


def test_unknown_network_name_is_a_config_error(tmp_path):
    _, module = _module(tmp_path, "videofusion")
    assert checkpointed_networks(module.model, ["residual"]) == ["residual"]
    with pytest.raises(ConfigError, match="its networks are base, residual"):
        checkpointed_networks(module.model, ["denoiser"])


def test_bf16_mixed_runs_the_networks_in_bf16_and_keeps_weights_ema_and_loss_in_fp32(tmp_path):
    import lightning as L

    from tests.conftest import run_videos

    seen = {}

    class Probe(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            seen.setdefault("loss", outputs["loss"].dtype)
            seen["params"] = {p.dtype for p in module.model.parameters()}
            seen["ema"] = {p.dtype for p in module.ema.shadow_params}
            seen["adam"] = {v.dtype for s in trainer.optimizers[0].state.values() for v in s.values()
                            if torch.is_tensor(v) and v.dim() > 0}

        def on_train_start(self, trainer, module):
            conv = next(m for m in module.model.residual.modules() if isinstance(m, torch.nn.Conv2d))
            conv.register_forward_hook(lambda m, a, out: seen.setdefault("conv_out", out.dtype) and None)

    run = tmp_path / "run"
    cfg = tiny_config(run, "train.max_steps=2", "train.precision=bf16-mixed")
    fit(cfg, train_loader=tiny_loader(), spec_info=tiny_spec(), extra_callbacks=[Probe()])
    assert seen["conv_out"] == torch.bfloat16                      # the network ran under bf16 autocast
    assert seen["loss"] == torch.float32                           # the loss is fp32
    assert seen["params"] == seen["ema"] == seen["adam"] == {torch.float32}
    info = json.loads((run / "model_info.json").read_text())
    assert info["switches"]["precision"] == "bf16-mixed"
    videos, _ = run_videos(run, 2)                                  # the exported pipeline samples (fp32)
    assert videos.dtype == torch.float32 and torch.isfinite(videos).all()


def test_channels_last_keeps_the_output(tmp_path):
    cfg, module = _module(tmp_path, "videofusion", "train.channels_last=true")
    x, y = _batch()
    t = torch.tensor([10, 200, 500, 900])
    cond = module.conditioner(y, 4)
    module.eval()
    with torch.no_grad():
        before = module.model(x, t, cond)
        apply_switches(module, cfg.train)
        after = module.model(x, t, cond)
    convs = [m for m in module.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs
                         if m.weight.shape[-1] > 1)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_fused_adamw_is_chosen_on_cuda_only_unless_forced(tmp_path):
    cpu = [torch.nn.Parameter(torch.zeros(2))]
    assert use_fused_adamw("auto", cpu) is False
    assert use_fused_adamw("true", cpu) is True and use_fused_adamw("false", cpu) is False
    _, module = _module(tmp_path, "videofusion", "train.optim.fused=false")
    assert module.configure_optimizers()["optimizer"].defaults["fused"] in (None, False)
    _, forced = _module(tmp_path, "videofusion", "train.optim.fused=true")
    opt = forced.configure_optimizers()["optimizer"]
    assert opt.defaults["fused"] is True
    # the fused kernel makes the same update as the per-parameter one (PyTorch's CPU fused AdamW)
    ref = module.configure_optimizers()["optimizer"]
    forced.load_state_dict(module.state_dict())
    for m, o in ((module, ref), (forced, opt)):
        _grads(m, _batch())
        o.step()
    for (n, a), (_, b) in zip(module.model.named_parameters(), forced.model.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=n)


@pytest.mark.slow
def test_compile_trains_resumes_and_keeps_plain_parameter_names(tmp_path):
    """torch.compile in place: the checkpoint and pipeline keep their names (eager backend: the wiring;
    the inductor backend is exercised by the GPU benchmark)."""
    run = tmp_path / "run"
    cfg = tiny_config(run, "train.max_steps=2", "train.compile=true", "train.compile_backend=eager")
    fit(cfg, train_loader=tiny_loader(), spec_info=tiny_spec())
    ck = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert not [k for k in ck["state_dict"] if "_orig_mod" in k]
    assert json.loads((run / "model_info.json").read_text())["switches"]["compile"]["backend"] == "eager"
    fit(tiny_config(run, "train.max_steps=3", "train.compile=true", "train.compile_backend=eager"), resume=True,
        train_loader=tiny_loader(), spec_info=tiny_spec())
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3


def test_stage1_keeps_only_the_base_from_the_checkpointing_list(tmp_path):
    from vfusion.training.runner import stage1_config

    cfg = tiny_config(tmp_path / "run", "train.gradient_checkpointing=[residual,base]")
    assert list(stage1_config(cfg).train.gradient_checkpointing) == ["base"]


@pytest.mark.parametrize("override, key", [("train.precision=bf16-true", "train.precision"),
                                           ("train.optim.fused=maybe", "train.optim.fused"),
                                           ("train.compile_mode=fast", "train.compile_mode")])
def test_switch_values_are_checked(tmp_path, override, key):
    with pytest.raises(ConfigError, match=key):
        tiny_config(tmp_path / "run", override)


def test_fsdp_refuses_the_full_size_ema(tmp_path):
    with pytest.raises(ConfigError, match="train.ema_decay=0 with fsdp"):
        tiny_config(tmp_path / "run", "train.strategy=fsdp")
    assert tiny_config(tmp_path / "run", "train.strategy=fsdp", "train.ema_decay=0").train.strategy == "fsdp"
