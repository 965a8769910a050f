import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_FILES = ("cricket_rgb.gif", "label_map.txt")
REFERENCE_HELP = (
    "set VFUSION_REFERENCE_DIR to a folder holding cricket_rgb.gif and label_map.txt "
    "(the data/ folder of https://github.com/google-deepmind/kinetics-i3d)"
)

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def weights_cache(request) -> Path:
    """Real detector files, fetched once per session through the real code (``$VFUSION_WEIGHTS_DIR`` if set)."""
    from vfusion.evaluation.weights import fetch_weights

    env = os.environ.get("VFUSION_WEIGHTS_DIR")
    folder = Path(env) if env else request.config.cache.mkdir("vfusion-weights")
    fetch_weights(("i3d", "inception"), cache_dir=folder, log=None)
    return folder


def reference_candidates() -> list[Path]:
    """Where the I3D reference clip is looked for: ``$VFUSION_REFERENCE_DIR``, then a team folder beside the clone."""
    env = os.environ.get("VFUSION_REFERENCE_DIR")
    return ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The folder with DeepMind's cricket clip and the Kinetics-400 label map; skips without it.

    ``VFUSION_REQUIRE_REFERENCE=1`` (set by ``.ci/run``) turns the skip into a failure, so a
    machine that is meant to have the clip cannot pass by skipping.
    """
    for folder in reference_candidates():
        if all((folder / name).is_file() for name in REFERENCE_FILES):
            return folder
    looked = ", ".join(str(f) for f in reference_candidates())
    message = f"reference clip not found (looked in {looked}); {REFERENCE_HELP}"
    if os.environ.get("VFUSION_REQUIRE_REFERENCE") == "1":
        pytest.fail(message)
    pytest.skip(message)


TINY_OVERRIDES = [
    "train.progress_bar=false", "train.log_every_n_steps=1", "train.checkpoint_every_n_steps=2",
    "train.optim.warmup_steps=0",
    "data.num_frames=4", "data.resolution=16", "data.batch_size=4", "data.num_workers=0",
    "model.base.block_out_channels=[8,16]", "model.base.norm_num_groups=4",
    "model.residual.block_out_channels=[8,16]", "model.residual.norm_num_groups=4",
    "model.residual.frame_embed_dim=8",
    "pretrain.batch_size=8", "sample.steps=4", "sample.batch_size=2",
]


def experiment_script(name: str):
    """``experiments/<name>.py`` loaded as a module (the scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_config(run_dir, *overrides, name="tiny"):
    from vfusion.experiment import resolve_config

    return resolve_config({"name": name}, overrides=TINY_OVERRIDES + [f"run_dir={run_dir}", *overrides])


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
    """A ModelSpec for model tests: the default diffusion process and a decomposed prior (λ = 0.5).

    The baselines do not read ``process`` / ``noise``; VideoFusion does."""
    from vfusion.diffusion.factory import make_process
    from vfusion.diffusion.noise import build_noise_prior
    from vfusion.diffusion.process import PROJECT_DDPM
    from vfusion.models.spec import ModelSpec

    process = make_process(PROJECT_DDPM)
    return ModelSpec(in_channels, size, frames, num_classes, process=process,
                     noise=build_noise_prior("decomposed", frames, value=0.5))


def model_inputs(size, frames, b=2, c=3, num_classes=5, seed=0):
    """Seeded ``(x_t, t, cond)`` for a model of that size.

    ``cond`` is a :class:`vfusion.conditioning.Cond` whose label-table indices
    (``label_ids(cond, num_classes, b, device)``) are uniform in ``[0, num_classes]``, so they
    include the null label: rows drawn as ``num_classes`` are marked ``uncond``. None when
    ``num_classes == 0``."""
    from vfusion.conditioning import Cond

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, frames, size, size, generator=g)
    t = torch.randint(0, 1000, (b,), generator=g)
    if not num_classes:
        return x, t, None
    y = torch.randint(0, num_classes + 1, (b,), generator=g)
    null = y == num_classes
    return x, t, Cond(class_labels=torch.where(null, torch.zeros_like(y), y), uncond=null)


def run_videos(run, num_videos, steps=2, batch_size=2, sampler="ddim", seed=0, guidance=1.0):
    """``(videos, labels)`` sampled from a run's exported pipeline (the real inference path)."""
    from vfusion.inference.generate import generate, load_pipeline
    from vfusion.rundir import SampleSettings

    settings = SampleSettings(num_videos, sampler, steps, guidance, seed, batch_size, 8)
    batches = list(generate(load_pipeline(run, "cpu"), settings, progress=False))
    return torch.cat([b[0] for b in batches]), (torch.cat([b[1] for b in batches]) if batches[0][1] is not None
                                                else None)
