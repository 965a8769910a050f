"""Sampling from a trained run: EMA weights, decomposed noise, any sampler, batched.

``generate`` is the streaming API used by ``vfusion sample`` and ``vfusion evaluate``:
it yields batches of videos ``(B, C, T, H, W)`` in [-1, 1] (decoded from VAE
latents when the run works on latents) with their class labels. Everything is
deterministic given ``seed``: batch ``i`` uses a generator seeded ``seed + i``, so
any prefix of the videos is the same whatever ``num_videos`` is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from vfusion.diffusion.sampling import sample


def load_run_config(run_dir: str | Path) -> DictConfig:
    from vfusion.config import merge_config

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        from vfusion.config import ConfigError

        raise ConfigError(f"'{run_dir}' is not a vfusion run directory (no config.yaml)")
    return merge_config(OmegaConf.load(path))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def class_labels_for(module, start: int, count: int, device) -> Optional[torch.Tensor]:
    """Labels cycling through the classes (video j gets class j mod K); None when unconditional."""
    k = module.spec.num_classes
    if k == 0:
        return None
    return torch.arange(start, start + count, device=device) % k


@torch.no_grad()
def sample_from_module(module, num_videos: int, sampler: str = "ddim", steps: int = 50, seed: int = 0,
                       guidance_scale: Optional[float] = None, start_index: int = 0, progress: bool = True,
                       use_ema: bool = True) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """One batch of ``num_videos`` videos from a ``VideoDiffusionModule``."""
    device = module.device
    spec = module.spec
    w = module.cfg.sample.guidance_scale if guidance_scale is None else guidance_scale
    labels = class_labels_for(module, start_index, num_videos, device)
    shape = (num_videos, spec.in_channels, spec.num_frames, spec.sample_size, spec.sample_size)
    gen = torch.Generator(device=device).manual_seed(int(seed))
    was_training = module.training
    module.eval()
    ctx = module.ema_model() if use_ema else _null(module.model)
    with ctx as model:
        x = sample(model, module.cfg.diffusion, module.noise, shape, sampler=sampler, steps=steps,
                   class_labels=labels, null_label=spec.num_classes if spec.num_classes else None,
                   guidance_scale=w, generator=gen, device=device, progress=progress)
    if module._codec is not None:
        x = module._codec.to(device).decode(x)
    module.train(was_training)
    return x.clamp(-1, 1), labels


class _null:
    def __init__(self, model):
        self.model = model

    def __enter__(self):
        return self.model

    def __exit__(self, *exc):
        return False


def generate(run_dir: str | Path, num_videos: int, sampler: str = "ddim", steps: int = 50, seed: int = 0,
             guidance_scale: Optional[float] = None, batch_size: int = 8, device=None, progress: bool = True,
             module=None) -> Iterator[tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """Yield ``(videos, labels)`` batches until ``num_videos`` videos were produced."""
    from tqdm.auto import tqdm

    from vfusion.training.runner import load_module

    device = torch.device(device) if device is not None else default_device()
    module = module if module is not None else load_module(run_dir, device)
    bar = tqdm(total=num_videos, desc="videos", unit="video", disable=not progress)
    done, i = 0, 0
    while done < num_videos:
        n = min(batch_size, num_videos - done)
        videos, labels = sample_from_module(module, n, sampler=sampler, steps=steps, seed=seed + i,
                                            guidance_scale=guidance_scale, start_index=done, progress=False,
                                            use_ema=module.cfg.sample.use_ema)
        bar.update(n)
        yield videos.cpu(), (labels.cpu() if labels is not None else None)
        done += n
        i += 1
    bar.close()
