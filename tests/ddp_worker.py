"""Run by tests/test_ddp.py: a tiny fit under Lightning DDP on CPU processes (gloo).

``weights OUT``: 2 processes; each rank saves its first and final weights, so the test can check that
the ranks agree. ``trajectory OUT N``: N processes at a global batch of 4 clips (4 / N each); each rank
saves its loss per step. For that comparison the timesteps and noise of a clip are drawn from a
generator seeded by the clip's own pixels and the step, so a clip gets the same draws whichever
process trains it; everything else (sampler, gradient averaging, optimizer, clipping) is Lightning's
and the project's own.
"""

import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DistributedSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import tiny_config, tiny_loader, tiny_spec  # noqa: E402
from vfusion.diffusion.noise import NoiseSample  # noqa: E402
from vfusion.training.runner import fit  # noqa: E402


class DumpWeights(L.Callback):
    def __init__(self, out: Path):
        self.out = out

    def on_train_start(self, trainer, pl_module):
        torch.save({k: v.clone() for k, v in pl_module.model.state_dict().items()},
                   self.out / f"init_rank{trainer.global_rank}.pt")

    def on_train_end(self, trainer, pl_module):
        torch.save(pl_module.model.state_dict(), self.out / f"rank{trainer.global_rank}.pt")
        torch.save(trainer.world_size, self.out / f"world_rank{trainer.global_rank}.pt")


class ClipSeededDraws(L.Callback):
    """Timesteps and noise drawn per clip from (the clip's pixels, the step), and each step's local loss saved."""

    def __init__(self, out: Path):
        self.out, self.losses, self.seeds = out, [], []

    def on_train_start(self, trainer, pl_module):
        process, noise = pl_module.process, pl_module.noise

        def timesteps(batch, device=None, generator=None):
            return torch.cat([torch.randint(0, process.num_train_timesteps, (1,), generator=self._gen(i, 0))
                              for i in range(batch)]).to(device)

        def sample(shape, generator=None, device=None, dtype=torch.float32, level=None):
            levels = level if torch.is_tensor(level) and level.dim() else [level] * shape[0]
            eps = [prior_sample((1, *shape[1:]), generator=self._gen(i, 1), dtype=dtype, level=levels[i]).eps
                   for i in range(shape[0])]
            return NoiseSample(eps=torch.cat(eps).to(device), base=None, residual=None)

        prior_sample = noise.sample
        process.sample_timesteps, noise.sample = timesteps, sample

    def _gen(self, i: int, what: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seeds[i] * 7 + what)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        x = batch[0]
        self.seeds = [int((x[i].double() * 1e4).sum().round().abs()) % 2**31 * 1009 + trainer.global_step
                      for i in range(x.shape[0])]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))

    def on_train_end(self, trainer, pl_module):
        torch.save({"losses": self.losses, "world_size": trainer.world_size},
                   self.out / f"losses_rank{trainer.global_rank}.pt")


def trajectory(out: Path, devices: int) -> None:
    data = tiny_loader(n=16).dataset
    cfg = tiny_config(out / "run", "train.max_steps=8", "train.accelerator=cpu", f"train.devices={devices}",
                      "train.strategy=" + ("ddp" if devices > 1 else "auto"), "model.class_dropout=0",
                      f"data.batch_size={4 // devices}")
    # under DDP Lightning shuffles with a DistributedSampler seeded by the run's seed; one process is given
    # the same sampler, so the global batches hold the same clips
    sampler = None if devices > 1 else DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=cfg.seed)
    local = torch.utils.data.DataLoader(data, batch_size=4 // devices, sampler=sampler)
    fit(cfg, train_loader=local, spec_info=tiny_spec(), extra_callbacks=[ClipSeededDraws(out)])


if __name__ == "__main__":
    out = Path(sys.argv[2])
    if sys.argv[1] == "trajectory":
        trajectory(out, int(sys.argv[3]))
    else:
        cfg = tiny_config(out / "run", "train.max_steps=3", "train.accelerator=cpu", "train.devices=2",
                          "train.strategy=ddp")
        fit(cfg, train_loader=tiny_loader(n=16), spec_info=tiny_spec(), extra_callbacks=[DumpWeights(out)])
