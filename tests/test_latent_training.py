"""The VAE-latent path end to end: train on latents of pixel clips, sample, decode to pixels."""

import torch
from diffusers import AutoencoderKL

from tests.conftest import run_videos, tiny_config, tiny_loader, tiny_spec
from vfusion.training.runner import fit


def test_train_and_sample_in_latent_space(tmp_path):
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=4, sample_size=16)
    vae.save_pretrained(str(tmp_path / "vae"))
    run = tmp_path / "run"
    cfg = tiny_config(run, "train.max_steps=2", f"data.vae_path={tmp_path / 'vae'}",
                      "model.base.block_out_channels=[8,8]", "model.residual.block_out_channels=[8,8]")
    spec = tiny_spec(channels=4, size=8)  # 16x16 pixels -> 8x8 latents with 4 channels
    fit(cfg, train_loader=tiny_loader(size=16), spec_info=spec)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any(k.startswith("codec") or "vae" in k for k in ckpt["state_dict"])  # VAE not checkpointed
    assert ckpt["state_dict"]["model.base.unet.conv_in.weight"].shape[1] == 4
    videos, labels = run_videos(run, 2, steps=2, batch_size=2)
    assert videos.shape == (2, 3, 4, 16, 16)  # decoded back to pixels
    assert videos.abs().max() <= 1.0
    assert (run / "pipeline" / "vae" / "config.json").is_file()  # the pipeline carries its VAE
