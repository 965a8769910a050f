"""Datasets: the embedded procedural set, UCF-101, Sky Time-lapse and plain folders.

``build_dataset(data_cfg, split=None, train=True, seed=0)`` gives a Dataset of ``(video (C, T, H, W) float32 in
[-1, 1], label int)`` (latents ``(c, T, h, w)`` when ``data.cache=latents``); ``build_dataloader`` wraps it and
``dataset_info`` gives class names and counts. The dataset names and their listing functions are in
:mod:`vfusion.data.registry`.

``data.dataset=embedded`` writes the procedural dataset (in the UCF-101 layout) at ``data.root`` on first use and
then reads it through the UCF-101 loader.

Every name here is imported on first use (module ``__getattr__``), so ``import vfusion.data`` does not import
torch; the functions live in :mod:`vfusion.data.api`.
"""

from __future__ import annotations

from importlib import import_module as _import_module

__all__ = ["build_dataset", "build_dataloader", "dataset_info", "build_listing", "build_video_index", "ensure_cache",
           "default_num_workers", "ensure_embedded", "LatentCodec", "DatasetError", "dataset_names"]

# public name -> the module that defines it
_SOURCES = {
    "build_dataset": "vfusion.data.api",
    "build_dataloader": "vfusion.data.api",
    "dataset_info": "vfusion.data.api",
    "build_listing": "vfusion.data.api",
    "build_video_index": "vfusion.data.api",
    "ensure_cache": "vfusion.data.api",
    "default_num_workers": "vfusion.data.api",
    "ensure_embedded": "vfusion.data.embedded",
    "LatentCodec": "vfusion.data.latents",
    "DatasetError": "vfusion.data.errors",
    "dataset_names": "vfusion.data.registry",
}
assert set(_SOURCES) == set(__all__)


def __getattr__(name: str):
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module 'vfusion.data' has no attribute {name!r}")
    value = getattr(_import_module(source), name)
    globals()[name] = value          # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
