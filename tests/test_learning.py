"""The whole loop learns: train VideoFusion on two constant-colour classes, sample each class.

(The sampler alone is exact: with an oracle ε it returns the data colour; see
``test_sampling.py``. Here the network must learn it.)
"""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tests.conftest import run_videos, tiny_config, tiny_spec
from vfusion.diffusion.loop_settings import LoopSettings
from vfusion.diffusion.sampling import sample_loop
from vfusion.training.runner import fit

COLOURS = torch.tensor([[0.8, -0.6, -0.6], [-0.6, -0.6, 0.8]])  # class 0 red, class 1 blue


def test_oracle_denoiser_reproduces_the_data_exactly():
    from vfusion.diffusion.factory import make_process
    from vfusion.diffusion.noise import DecomposedNoise
    from vfusion.diffusion.process import PROJECT_DDPM

    process = make_process({**PROJECT_DDPM, "num_train_timesteps": 100})
    ac = process.alphas_cumprod
    c = COLOURS[0].view(1, 3, 1, 1, 1)

    def oracle(x, t, y=None):  # the exact ε for data that is always colour c
        a = ac[t].view(-1, 1, 1, 1, 1)
        return (x - a.sqrt() * c) / (1 - a).sqrt()

    for sampler in ("ddpm", "ddim", "dpm"):
        out = sample_loop(oracle, process, DecomposedNoise.constant(4, 0.5), (2, 3, 4, 8, 8),
                          LoopSettings(sampler, 20, progress=False), generator=torch.Generator().manual_seed(0))
        assert torch.allclose(out, c.expand_as(out), atol=1e-4), sampler


@pytest.mark.slow
def test_samples_take_the_colour_of_their_class(tmp_path):
    y = torch.arange(32) % 2
    x = COLOURS[y].view(32, 3, 1, 1, 1).expand(32, 3, 4, 8, 8).clone()
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    run = tmp_path / "run"
    cfg = tiny_config(run, "train.max_steps=300", "train.optim.lr=0.003", "train.ema_decay=0",
                      "model.class_dropout=0.0", "model.base.lr_mult=1.0", "data.resolution=8",
                      "diffusion.num_train_timesteps=100",
                      "model.base.block_out_channels=[32,32]", "model.residual.block_out_channels=[32,32]",
                      "model.base.norm_num_groups=8", "model.residual.norm_num_groups=8")
    fit(cfg, train_loader=loader, spec_info=tiny_spec(size=8))
    videos, labels = run_videos(run, 4, steps=50, batch_size=4, sampler="ddpm")
    means = videos.mean(dim=(2, 3, 4))                                   # (4, 3) mean colour per video
    own = (means - COLOURS[labels]).norm(dim=1)
    other = (means - COLOURS[1 - labels]).norm(dim=1)
    assert (own < other).all(), (means, labels)
