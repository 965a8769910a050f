"""The spacetime-patch DiT (Latte-style baseline): shapes, tubelets, adaLN-Zero, conditioning, gradients."""

from functools import partial

import pytest
import torch

from tests.conftest import model_inputs, model_spec
from vfusion.conditioning import Cond, label_ids
from vfusion.experiment import resolve_config
from vfusion.models.dit import SpacetimeDiT, dit_dims, fold_tubelets, unfold_tubelets
from vfusion.models.registry import build_model

T, S, P = 4, 8, 2


def cfg(**dit):
    return resolve_config({"name": "t", "model": {"name": "dit", "dit": {"patch_size": P, **dit}}})


spec = partial(model_spec, S, T)
inputs = partial(model_inputs, S, T)


def cond_of(ids, num_classes=5):
    """A Cond whose label-table indices are ``ids`` (``num_classes`` = the null label)."""
    null = ids == num_classes
    return Cond(class_labels=torch.where(null, torch.zeros_like(ids), ids), uncond=null)


def randomize(model, std=0.2):
    """Leave adaLN-Zero init: random modulation, tables and final layer."""
    torch.manual_seed(1)
    latte = model.latte
    with torch.no_grad():
        params = [latte.adaln_single.linear.weight, latte.scale_shift_table, latte.proj_out.weight]
        params += [b.scale_shift_table for b in (*latte.transformer_blocks, *latte.temporal_transformer_blocks)]
        for p in params:
            p.normal_(0, std)


@pytest.mark.parametrize("channels,num_classes,pt", [(3, 5, 1), (4, 0, 1), (4, 5, 2), (3, 0, 2)])
def test_output_shape(channels, num_classes, pt):
    model = build_model(cfg(temporal_patch_size=pt), spec(channels, num_classes))
    assert isinstance(model, SpacetimeDiT)
    x, t, y = inputs(c=channels, num_classes=num_classes)
    with torch.no_grad():
        assert model(x, t, y).shape == x.shape
        assert model(x, t, None).shape == x.shape


@pytest.mark.parametrize("pt", [1, 2, 4])
def test_tubelet_fold_round_trip(pt):
    x = torch.randn(2, 3, 4, 5, 6)
    folded = fold_tubelets(x, pt)
    assert folded.shape == (2, 3 * pt, 4 // pt, 5, 6)
    assert torch.equal(folded[:, 1 * pt + (pt - 1), 0], x[:, 1, pt - 1])  # channel c*pt + j <- frame j of its group
    assert torch.equal(unfold_tubelets(folded, pt), x)


@pytest.mark.parametrize("pt", [1, 2])
def test_tokens_are_spacetime_patches(pt):
    """Patchify and unpatchify line up: with the blocks still at their zero-gated (identity)
    init, tokens do not interact, so changing one input tubelet changes exactly that tubelet
    of the output."""
    torch.manual_seed(0)
    model = SpacetimeDiT.build(cfg(temporal_patch_size=pt), spec())
    with torch.no_grad():
        model.latte.proj_out.weight.normal_(0, 0.2)
    x, t, y = inputs()
    region = (slice(None), slice(None), slice(2, 2 + pt), slice(2, 2 + P), slice(4, 4 + P))
    x2 = x.clone()
    x2[region] += 1.0
    with torch.no_grad():
        changed = (model(x2, t, y) - model(x, t, y)).abs() > 1e-6
    expected = torch.zeros_like(changed)
    expected[region] = True
    assert torch.equal(changed.any(dim=(0, 1)), expected.any(dim=(0, 1)))


@pytest.mark.parametrize("pt", [1, 2])
def test_adaln_zero_init_outputs_zero(pt):
    model = SpacetimeDiT.build(cfg(temporal_patch_size=pt), spec())
    x, t, y = inputs()
    with torch.no_grad():
        assert torch.equal(model(x, t, y), torch.zeros_like(x))


def test_spatial_and_temporal_mixing_and_conditioning():
    torch.manual_seed(0)
    model = SpacetimeDiT.build(cfg(), spec())
    randomize(model)
    x, t, y = inputs()
    x2 = x.clone()
    x2[:, :, 0, :P, :P] += 1.0  # first patch of the first frame
    with torch.no_grad():
        out = model(x, t, y)
        diff = (model(x2, t, y) - out).abs()
        assert diff[:, :, 0, -P:, -P:].max() > 1e-4  # other patch, same frame: spatial attention
        assert diff[:, :, -1, :P, :P].max() > 1e-4  # same patch, last frame: temporal attention
        ids = label_ids(y, 5, x.shape[0], x.device)
        assert (model(x, t, cond_of((ids + 1) % 6)) - out).abs().max() > 1e-4  # the class reaches the output
        assert (model(x, (t + 100) % 1000, y) - out).abs().max() > 1e-4  # so does the timestep
        null = cond_of(torch.full_like(ids, 5))
        assert torch.equal(label_ids(null, 5, x.shape[0], x.device), torch.full_like(ids, 5))
        assert (model(x, t, null) - model(x, t, None)).abs().max() == 0  # None = null label
        assert (model(x, t, y.null()) - model(x, t, None)).abs().max() == 0  # so is Cond.null()
    uncond = SpacetimeDiT.build(cfg(), spec(num_classes=0))
    randomize(uncond)
    with torch.no_grad():
        assert torch.equal(uncond(x, t, y), uncond(x, t, None))  # labels ignored when unconditional


@pytest.mark.parametrize("pt", [1, 2])
def test_gradients_reach_all_parameters(pt):
    torch.manual_seed(0)
    model = SpacetimeDiT.build(cfg(temporal_patch_size=pt), spec(num_classes=2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, t, _ = inputs(b=3)
    y = cond_of(torch.arange(3), num_classes=2)  # every class row incl. the null label
    assert torch.equal(label_ids(y, 2, 3, x.device), torch.arange(3))
    for step in range(3):  # zero final layer, then zero gates: block weights get gradient from step 3 on
        opt.zero_grad()
        (model(x, t, y) - x).square().mean().backward()
        if step < 2:
            opt.step()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, dead


def test_sizes_and_validation():
    assert dit_dims(cfg().model.dit) == (64, 4, 4)
    assert dit_dims(cfg(size="S").model.dit) == (384, 12, 6)
    assert dit_dims(cfg(size="B", depth=4).model.dit) == (768, 4, 12)
    with pytest.raises(ValueError, match="size"):
        dit_dims(cfg(size="XL").model.dit)
    with pytest.raises(ValueError, match="even"):
        SpacetimeDiT.build(cfg(depth=3), spec())
    # the config rejects them when it is loaded (before a run directory is written) ...
    with pytest.raises(ValueError, match="not divisible by model.dit.patch_size=3"):
        SpacetimeDiT.build(cfg(patch_size=3), spec())
    with pytest.raises(ValueError, match="not divisible by model.dit.temporal_patch_size=3"):
        SpacetimeDiT.build(cfg(temporal_patch_size=3), spec())
    # ... and the model itself when built directly
    with pytest.raises(ValueError, match="patch size"):
        SpacetimeDiT(3, 32, 4, patch_size=3)
    with pytest.raises(ValueError, match="temporal patch"):
        SpacetimeDiT(3, 32, 4, temporal_patch_size=3)
    counts = SpacetimeDiT.build(cfg(), spec()).parameter_counts()
    assert counts["all"]["total"] > counts["spatial"]["total"] + counts["temporal"]["total"] > 0


@pytest.mark.slow
def test_latte_s_scale_builds():
    model = SpacetimeDiT.build(cfg(size="S"), model_spec(32, 16, 4, 101))
    total = model.parameter_counts()["all"]["total"]
    assert 20e6 < total < 25e6  # 12 blocks of width 384 with adaLN-single (see dit.py docstring)
    x = torch.randn(1, 4, 16, 32, 32)
    with torch.no_grad():
        assert model(x, torch.tensor([10]), Cond(class_labels=torch.tensor([3]))).shape == x.shape
