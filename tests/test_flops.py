"""The FLOPs of a training step (vfusion.training.flops): the counting method on a layer whose cost is known
analytically, and a run's count."""

import torch
from torch import nn

from tests.conftest import tiny_config, tiny_spec
from vfusion.training.flops import run_step_flops, train_step_flops


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
