"""Run by tests/test_ddp.py: a tiny fit under Lightning DDP on 2 CPU processes (gloo).

Each rank saves its final weights, so the test can check that the ranks agree.
"""

import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import tiny_config, tiny_loader, tiny_spec  # noqa: E402
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


if __name__ == "__main__":
    out = Path(sys.argv[1])
    cfg = tiny_config(out / "run", "train.max_steps=3", "train.accelerator=cpu", "train.devices=2",
                      "train.strategy=ddp")
    fit(cfg, train_loader=tiny_loader(n=16), spec_info=tiny_spec(), extra_callbacks=[DumpWeights(out)])
