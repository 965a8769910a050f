"""The dataset registry: every ``data.dataset`` name and the function that lists its videos.

``DATASETS`` maps a name to a :class:`DatasetEntry`, a ``"module:function"`` string naming a
listing function with the one signature ``(data_cfg, split) -> Listing``; the module is
imported only when :func:`listing_function` is called. An entry also says whether the dataset
has UCF-101-style folds (``data.fold`` applies).

This module imports neither torch nor any dataset module, so configuration checks and the
command line can read :func:`dataset_names` cheaply.
"""

from __future__ import annotations

import importlib
from types import MappingProxyType
from typing import Callable, Mapping

from vfusion.data.errors import DatasetError

__all__ = ["DatasetEntry", "DATASETS", "SPLITS", "dataset_names", "listing_function", "has_folds", "has_captions",
           "is_generated", "default_prompt", "check_data_section"]


class DatasetEntry(str):
    """``"module:function"`` of a listing function ``(data_cfg, split) -> Listing``.

    ``folds``: the dataset has UCF-101-style train/test folds, chosen by ``data.fold``.
    ``prompt``: what a text-conditioned base is told when the data is used without classes.
    ``captions``: every video comes with its own caption (text-to-video data).
    ``generated``: the project writes the videos itself on first use (the embedded datasets).
    """

    folds: bool
    prompt: str
    captions: bool
    generated: bool

    def __new__(cls, target: str, *, folds: bool = False, prompt: str = "a video",
                captions: bool = False, generated: bool = False) -> "DatasetEntry":
        module, sep, function = target.partition(":")
        if not (module and sep and function):
            raise ValueError(f"a dataset entry is 'module:function', not '{target}'")
        entry = super().__new__(cls, target)
        entry.folds = bool(folds)
        entry.prompt = str(prompt)
        entry.captions = bool(captions)
        entry.generated = bool(generated)
        return entry

    def __repr__(self) -> str:
        return f"DatasetEntry({str(self)!r}, folds={self.folds})"


# the splits every dataset can be read as (``data.split``, ``data.eval_split``, ``eval.real_split``)
SPLITS = ("train", "test", "all")

DATASETS: Mapping[str, DatasetEntry] = MappingProxyType({
    "embedded": DatasetEntry("vfusion.data.embedded:list_from_config", folds=True, generated=True),
    # the embedded clips with captions made from their drawn parameters: an offline text-to-video dataset
    "embedded_text": DatasetEntry("vfusion.data.embedded:list_captioned_from_config", folds=True,
                                  prompt="a red ball bouncing to the right, fast", captions=True, generated=True),
    "ucf101": DatasetEntry("vfusion.data.ucf101:list_from_config", folds=True),
    "sky": DatasetEntry("vfusion.data.sky:list_from_config", prompt="a time-lapse video of the sky"),
    "folder": DatasetEntry("vfusion.data.folder:list_from_config"),
    "captions": DatasetEntry("vfusion.data.captions:list_captions_from_config", captions=True),
    "webvid": DatasetEntry("vfusion.data.captions:list_webvid_from_config", captions=True),
})


def dataset_names() -> tuple[str, ...]:
    """Every valid ``data.dataset``, in registry order."""
    return tuple(DATASETS)


def _entry(name: str) -> DatasetEntry:
    try:
        return DATASETS[name]
    except (KeyError, TypeError):   # TypeError: an unhashable value from a config
        raise DatasetError(f"unknown data.dataset '{name}'; expected one of {', '.join(DATASETS)}") from None


def listing_function(name: str) -> Callable:
    """The listing function ``(data_cfg, split) -> Listing`` of dataset ``name`` (imported now);
    :class:`DatasetError` naming the choices for an unknown name."""
    module, _, function = _entry(name).partition(":")
    return getattr(importlib.import_module(module), function)


def has_folds(name: str) -> bool:
    """Whether dataset ``name`` has UCF-101-style folds; :class:`DatasetError` for an unknown name."""
    return _entry(name).folds


def has_captions(name: str) -> bool:
    """Whether every video of dataset ``name`` has its own caption; :class:`DatasetError` for an unknown name."""
    return _entry(name).captions


def is_generated(name: str) -> bool:
    """Whether dataset ``name`` is written by the project on first use (nothing to download)."""
    return _entry(name).generated


def default_prompt(name: str) -> str:
    """The prompt of dataset ``name`` for a text-conditioned base on unconditional clips."""
    return _entry(name).prompt


# data.short_policy, data.cache, data.missing_caption
SHORT_POLICIES = ("skip", "loop", "lower_stride")
CACHE_KINDS = ("none", "clips", "latents")
MISSING_CAPTION = ("error", "skip")


def check_data_section(cfg) -> None:
    """The ``data`` section's choices and counts, beyond the schema's types."""
    from vfusion.config import ConfigError, at_least, check_choice

    d = cfg.data
    check_choice(d.dataset, dataset_names(), "data.dataset")
    check_choice(d.split, SPLITS, "data.split")
    check_choice(d.eval_split, SPLITS, "data.eval_split")
    check_choice(d.short_policy, SHORT_POLICIES, "data.short_policy")
    check_choice(d.cache, CACHE_KINDS, "data.cache")
    check_choice(d.missing_caption, MISSING_CAPTION, "data.missing_caption")
    if not 0.0 <= d.caption_dropout < 1.0:
        raise ConfigError(f"config key 'data.caption_dropout' is {d.caption_dropout}; expected a value in [0, 1)")
    if d.fold not in (1, 2, 3):
        raise ConfigError(f"config key 'data.fold' is {d.fold}; UCF-101 has folds 1, 2 and 3")
    if d.num_frames < 1 or d.frame_stride < 1:
        raise ConfigError("config keys 'data.num_frames' and 'data.frame_stride' must be >= 1")
    if d.cache == "latents" and not d.vae_path:
        raise ConfigError("config key 'data.cache' is 'latents' but 'data.vae_path' is not set (a local diffusers "
                          "AutoencoderKL directory)")
    at_least(cfg, ("data.batch_size", "data.resolution"), 1)
