import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VFUSION_SHARED", ROOT.parent / "shared"))

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def weights_cache(request) -> Path:
    """Real detector files, fetched once per session through the real code (``$VFUSION_WEIGHTS_DIR`` if set)."""
    from vfusion.evaluation.weights import fetch_weights

    env = os.environ.get("VFUSION_WEIGHTS_DIR")
    folder = Path(env) if env else request.config.cache.mkdir("vfusion-weights")
    fetch_weights(("i3d", "inception"), cache_dir=folder, log=None)
    return folder


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"../shared not found at {SHARED}; set VFUSION_SHARED to its location")
    return SHARED


TINY_OVERRIDES = [
    "train.progress_bar=false", "train.log_every_n_steps=1", "train.checkpoint_every_n_steps=2",
    "train.optim.warmup_steps=0",
    "data.num_frames=4", "data.resolution=16", "data.batch_size=4", "data.num_workers=0",
    "model.base.block_out_channels=[8,16]", "model.base.norm_num_groups=4",
    "model.residual.block_out_channels=[8,16]", "model.residual.norm_num_groups=4",
    "model.residual.frame_embed_dim=8",
    "pretrain.batch_size=8", "sample.steps=4", "sample.batch_size=2",
]


def tiny_config(run_dir, *overrides, name="tiny"):
    from vfusion.config import merge_config

    return merge_config({"name": name}, overrides=TINY_OVERRIDES + [f"run_dir={run_dir}", *overrides])


def tiny_spec(num_classes=2, frames=4, size=16, channels=3):
    return {"in_channels": channels, "sample_size": size, "num_frames": frames, "num_classes": num_classes,
            "class_names": [f"c{i}" for i in range(num_classes)]}


def tiny_loader(frames=4, size=16, n=8, num_classes=2, seed=0):
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, frames, size, size, generator=g) * 2 - 1
    y = torch.randint(0, max(num_classes, 1), (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=4, shuffle=False)


def model_spec(size, frames, in_channels=3, num_classes=5):
    """A ModelSpec for model tests (λ and ᾱ placeholders: the baselines do not read them)."""
    from vfusion.models.spec import ModelSpec

    return ModelSpec(in_channels, size, frames, num_classes, torch.zeros(frames), torch.linspace(0.999, 0.01, 1000))


def model_inputs(size, frames, b=2, c=3, num_classes=5, seed=0):
    """Seeded ``(x_t, t, labels)`` for a model of that size; labels include the null label."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, frames, size, size, generator=g)
    t = torch.randint(0, 1000, (b,), generator=g)
    y = torch.randint(0, num_classes + 1, (b,), generator=g) if num_classes else None
    return x, t, y
