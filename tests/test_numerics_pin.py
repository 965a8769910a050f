"""Pinned numbers of seeded tiny runs: refactors of the objective, the models or the sampler must not
change them. The values were recorded before the DiffusionProcess / pipeline refactor (issue 9); a
change on purpose updates them in a commit that says why."""

import pytest
import torch

from tests.conftest import tiny_config, tiny_spec

PINNED = {
    # name, stage: (loss at step 0, first 4 values of a DDIM sample, 3 values of a ddpm sample, DDIM sum)
    ("videofusion", "video"): (1.0832360982894897, [-0.9171828031539917, -0.9782547950744629, -1.0, 0.6677824854850769],
                               [-0.43696966767311096, -0.266215980052948, -0.6314013004302979], 149.16194109554635),
    ("video_unet", "video"): (1.0801194906234741, [-1.0, -0.9788461327552795, -1.0, 0.7180677056312561],
                              [-0.6006255745887756, -1.0, -0.5127467513084412], 27.123865493224002),
    ("dit", "video"): (0.9728640913963318, [-0.9462383985519409, -1.0, -1.0, 1.0],
                       [-0.5700647830963135, -0.9993518590927124, -0.642800509929657], -216.03257477865554),
    ("videofusion", "pretrain"): (1.0700256824493408, [-0.9998266100883484, -0.9780547618865967,
                                                       -0.7305366396903992, -1.0],
                                  [-1.0, -1.0, -0.41070812940597534], 83.06458634810406),
}


def _module(tmp_path, name, stage):
    from vfusion.training.runner import build_module, stage1_config

    cfg = tiny_config(tmp_path, f"model.name={name}", "model.dit.patch_size=4")
    return build_module(stage1_config(cfg) if stage == "pretrain" else cfg, tiny_spec())


def _sample(module, sampler):
    pipe = module.pipeline()
    return pipe(batch_size=2, num_inference_steps=3, sampler=sampler, generator=torch.Generator().manual_seed(0),
                output_type="pt", progress=False).frames


@pytest.mark.parametrize("name,stage", list(PINNED))
def test_pinned_loss_and_samples(tmp_path, name, stage):
    loss0, ddim_head, ddpm_vals, ddim_sum = PINNED[(name, stage)]
    torch.manual_seed(0)
    module = _module(tmp_path, name, stage)
    g = torch.Generator().manual_seed(1)
    frames = 1 if stage == "pretrain" else 4
    x = torch.rand(2, 3, frames, 16, 16, generator=g) * 2 - 1
    torch.manual_seed(2)
    loss = module.diffusion_loss(x, torch.tensor([0, 1]))["total"].item()
    assert loss == pytest.approx(loss0, rel=1e-6)
    with torch.no_grad():  # move off the zero-initialised outputs so that the samples depend on every network
        gg = torch.Generator().manual_seed(3)
        for p in module.model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gg))
    module.ema = None
    ddim = _sample(module, "ddim")
    ddpm = _sample(module, "ddpm")
    assert ddim.flatten()[:4].tolist() == pytest.approx(ddim_head, abs=1e-5)
    assert ddpm.flatten()[100:103].tolist() == pytest.approx(ddpm_vals, abs=1e-5)
    assert float(ddim.double().sum()) == pytest.approx(ddim_sum, abs=1e-2)
