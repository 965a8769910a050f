"""The FLOPs of a training step (vfusion.training.flops): the counting method on a layer whose cost is known
analytically, and a run's count."""

import pytest
import torch
from torch import nn

from tests.conftest import ROOT, tiny_config, tiny_spec
from vfusion.training.flops import denoise_flops, run_step_flops, train_step_flops


def test_a_linear_training_step_costs_6_b_in_out():
    """forward x·Wᵀ: 2·B·in·out; backward: dL/dx = g·W and dL/dW = gᵀ·x, 2·B·in·out each."""
    b, n_in, n_out = 8, 32, 16
    layer = nn.Linear(n_in, n_out)
    hidden = torch.randn(b, n_in, requires_grad=True)  # the layer's input needs a gradient (a hidden layer)
    assert train_step_flops(layer, hidden) == 6 * b * n_in * n_out
    # on the data itself autograd skips dL/dx: the counter reports what runs, not a 6·N rule
    assert train_step_flops(layer, torch.randn(b, n_in)) == 4 * b * n_in * n_out


def test_counting_leaves_the_module_and_the_rng_as_they_were():
    layer = nn.Linear(4, 3).eval()
    layer.weight.grad = torch.ones(3, 4)
    x = torch.randn(2, 4)
    state = torch.get_rng_state()

    def noisy_loss(module, x):
        return module(x + torch.randn_like(x)).sum()  # draws random numbers, like the diffusion loss

    assert train_step_flops(layer, x, loss=noisy_loss) == 4 * 2 * 4 * 3
    assert torch.equal(torch.get_rng_state(), state) and not layer.training
    assert torch.equal(layer.weight.grad, torch.ones(3, 4)) and layer.bias.grad is None


def test_a_run_step_is_linear_in_the_batch_size(tmp_path):
    """Every network here works per clip, so twice the batch is exactly twice the FLOPs."""
    small = run_step_flops(tiny_config(tmp_path, "data.batch_size=1"), tiny_spec())
    large = run_step_flops(tiny_config(tmp_path, "data.batch_size=3"), tiny_spec())
    assert small > 0 and large == 3 * small


def _real_step_flops(cfg, spec):
    """The count on real CPU tensors: the module built as training builds it, one step on zeros."""
    from vfusion.backbones.adopt import adopt_backbone
    from vfusion.training.runner import build_module

    cfg = adopt_backbone(cfg)
    module = build_module(cfg, spec)
    b = int(cfg.data.batch_size)
    x = torch.zeros(b, spec["in_channels"], spec["num_frames"], spec["sample_size"], spec["sample_size"])
    return train_step_flops(module, (x, torch.zeros(b, dtype=torch.long)))


def test_cpu_attention_counts_as_its_four_forward_and_eight_backward_products():
    """Q·Kᵀ and A·V forward (2·b·h·s·s·d each); their gradients w.r.t. both operands backward. The CPU's
    fused kernel, which PyTorch has no formula for, counts the same as the meta device's plain products."""
    b, h, s, d = 2, 3, 10, 8
    qkv = [torch.randn(b, h, s, d, requires_grad=True) for _ in range(3)]

    def attention(_, qkv):
        return torch.nn.functional.scaled_dot_product_attention(*qkv).sum()

    expected = 3 * 4 * b * h * s * s * d
    assert train_step_flops(nn.Identity(), qkv, loss=attention) == expected
    meta = [t.detach().to("meta").requires_grad_() for t in qkv]
    assert train_step_flops(nn.Identity(), meta, loss=attention) == expected


@pytest.mark.parametrize("overrides", [
    ("model.residual.temporal=attention", "model.base.attention_resolutions=[8]"),  # VideoFusion with attention
    ("noise.value=0.9", "noise.value_T=1.0"),  # λ rising with the noise level, as in the main job
    ("model.name=video_unet", "model.video_unet.temporal_layers=attention"),
    ("model.name=dit",),
])
def test_a_step_counted_on_the_meta_device_equals_a_real_step(tmp_path, overrides):
    cfg = tiny_config(tmp_path, "data.batch_size=2", *overrides)
    assert run_step_flops(cfg, tiny_spec()) == _real_step_flops(cfg, tiny_spec()) > 0


@pytest.mark.parametrize("model", ["videofusion", "video_unet", "dit"])
def test_the_count_from_the_config_alone_equals_the_count_from_the_data(tmp_path, model):
    """No dataset is read for the count: the class count (a table look-up) does not change it."""
    cfg = tiny_config(tmp_path, f"model.name={model}", "data.root=/nonexistent/dataset")
    from_config = run_step_flops(cfg)
    assert from_config == run_step_flops(cfg, tiny_spec(num_classes=2)) == run_step_flops(cfg, tiny_spec(101))
    assert denoise_flops(cfg) == denoise_flops(cfg, tiny_spec(num_classes=101)) > 0


def test_latent_facts_come_from_the_vae_config_alone(tmp_path):
    from diffusers import AutoencoderKL

    from vfusion.data.latents import LatentCodec
    from vfusion.training.runner import shape_facts

    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8),
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        norm_num_groups=4, sample_size=32)
    vae.save_pretrained(str(tmp_path / "vae"))
    cfg = tiny_config(tmp_path, f"data.vae_path={tmp_path / 'vae'}", "data.resolution=32",
                      "data.root=/nonexistent/dataset")
    codec = LatentCodec(tmp_path / "vae")
    facts = shape_facts(cfg)
    assert (facts["in_channels"], facts["sample_size"]) == (codec.latent_channels, 32 // codec.downsample) == (4, 8)
    assert run_step_flops(cfg) == _real_step_flops(cfg, facts)


def test_a_dry_run_reads_no_dataset_and_writes_nothing(tmp_path):
    """`vfusion study --dry-run` on a FLOPs budget whose dataset is absent prints every run's count."""
    import subprocess
    import sys

    study = tmp_path / "study.yaml"
    study.write_text(f"""
name: dry
base: {ROOT / 'configs' / 'ucf101.yaml'}
overrides: [data.root={tmp_path / 'absent'}, model.base.pretrained=@stage1]
budget: {{flops: 1.0e15}}
seeds: [0]
grid:
  cell:
    - {{label: vf, overrides: []}}
    - {{label: dit, overrides: [model.name=dit, model.base.pretrained=null]}}
stage1: {{steps: 10}}
""")
    out = subprocess.run([sys.executable, "-m", "vfusion.cli", "study", "--config", str(study), "--study-dir",
                          str(tmp_path / "sd"), "--dry-run"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("FLOP/step") == 2 and "vf_s0" in out.stdout and "dit_s0" in out.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]
