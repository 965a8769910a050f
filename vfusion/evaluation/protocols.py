"""Evaluation protocol presets (``eval.protocol``): which real clips the generated ones meet.

``vfusion`` (the default): ``min(N, split size)`` clips of the evaluation split (``eval.real_split`` or
``data.eval_split``) at the positions of a seeded permutation (``clip_sources.SUBSET_SEED``), one clip per video at
a seeded start; short videos follow ``data.short_policy``. Metric names have no suffix: ``fvd{N}_{T}f``.

``stylegan_v``: StyleGAN-V's selection (``docs/protocols.md``, "StyleGAN-V's clip selection"; read from its
``metric_utils.py`` and ``training/dataset.py``): the videos in sorted path order, those failing StyleGAN-V's test
``frames >= num_frames * frame_stride`` (``s - 1`` frames more than the clip spans) discarded, the first N of the
rest, one clip each at a uniform offset; UCF-101 train + test (the authors' real statistics, StyleGAN-V issue #30),
every other dataset ``train``. Names that depend on the real clips carry ``_sgv``. Where StyleGAN-V's code gives
nothing to copy, or copying it would break something this project promises, the preset chooses (``SGV_CHOICES``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

PROTOCOLS = ("vfusion", "stylegan_v")
DEFAULT_PROTOCOL = "vfusion"
NAME_SUFFIX = {"vfusion": "", "stylegan_v": "_sgv"}
OFFSET_SEED = 0  # the stylegan_v clip offsets: fixed, so the real statistics can be cached
SGV_SELECTION = ("videos in sorted order of their names (code points, case-sensitive), those with fewer than "
                 "num_frames * frame_stride frames discarded, the first N of the rest; one clip per video at a "
                 "seeded uniform offset")

# the choices above, as metrics.json records them next to a stylegan_v number. "fake": StyleGAN-V asks its
# generator for the times 0, s, 2s, ...: the same clip for a model trained on stride-s clips. "kvd_fid": their
# _sgv names say which clips were used, not that StyleGAN-V reports them.
SGV_CHOICES = {
    "order": "by the video's own name (file stem or frame folder), as in StyleGAN-V's flat dataset folder",
    "offsets": f"seeded (offset seed {OFFSET_SEED} and the sorted position), not Python's unseeded random",
    "unreadable": "left out with a warning (StyleGAN-V would stop)",
    "frames": "decoded from the dataset's files, cropped and resized as in training (data.resolution)",
    "fake": "N generated clips of T frames at the data stride; from a folder, the first T frames of each file",
    "classes": "the sample pipeline's balanced cycle (video j is class j mod K), where StyleGAN-V draws the "
               "label of a random training video",
    "kvd_fid": "on the same clips (StyleGAN-V has no KVD; its FID reads every frame of the dataset)",
}


def check_protocol(protocol: Optional[str]) -> str:
    from vfusion.errors import UserError

    protocol = protocol or DEFAULT_PROTOCOL
    if protocol not in PROTOCOLS:
        raise UserError(f"evaluation protocol '{protocol}' is not one of {', '.join(PROTOCOLS)}")
    return protocol


def name_suffix(protocol: str) -> str:
    """What the names of metrics that depend on the real clips end with under ``protocol``."""
    return NAME_SUFFIX[check_protocol(protocol)]


def stylegan_v_split(dataset: str) -> str:
    """The split StyleGAN-V's real statistics use: UCF-101 train + test, every other dataset train."""
    return "all" if dataset == "ucf101" else "train"


def real_split(protocol: str, dataset: str, requested: Optional[str], default: str) -> str:
    """The real split: the preset's under ``stylegan_v`` (``requested`` is ignored), else ``requested``
    or ``default`` (``data.eval_split``)."""
    if check_protocol(protocol) == "stylegan_v":
        return stylegan_v_split(dataset)
    return requested or default


def min_length(num_frames: int, stride: int) -> int:
    """The fewest frames a video may have to be kept by StyleGAN-V (``discard_short_videos``)."""
    return int(num_frames) * int(stride)


def sort_key(path: str) -> tuple[str, str]:
    """Where a video (file or frame folder) sorts: its own name without the extension, then the path.

    StyleGAN-V sorts a flat folder of videos, so its path is the video's own name; names compare as Python
    compares strings (code points, case-sensitive). On UCF-101 this differs from sorting ``Class/file`` paths:
    ``v_BasketballDunk_*`` comes before ``v_Basketball_*``, as in StyleGAN-V's folder.
    """
    p = Path(path)
    name = p.stem if p.suffix and not p.is_dir() else p.name
    return name, str(path)


def offset_position(index: int, seed: int = OFFSET_SEED) -> float:
    """The ``u`` in [0, 1) of the clip of the video at sorted position ``index`` (uniform, seeded)."""
    from vfusion.data.clips import eval_position

    return eval_position(seed, index)


def clip_start(length: int, num_frames: int, stride: int, u: float) -> int:
    """The first frame of a clip of ``num_frames`` at ``stride`` in a video of ``length`` frames: uniform in
    ``u`` over every start that fits (StyleGAN-V draws ``randint(0, length - T*s + s - 1)``, the same range)."""
    from vfusion.data.clips import clip_span

    starts = int(length) - clip_span(num_frames, stride) + 1
    if starts < 1:
        raise ValueError(f"a video of {length} frames holds no clip of {num_frames} frames at stride {stride}")
    return min(int(u * starts), starts - 1)


# --------------------------------------------------------------------------- stylegan_v on a dataset

@dataclass
class Selection:
    """The stylegan_v real clips of a dataset split: ``dataset[i]`` is the clip of sorted video ``i``."""

    dataset: Any            # a ClipDataset over the first N kept videos, in sorted order, seeded offsets
    num_kept: int           # videos of the split long enough for the protocol (N is at most this)
    num_discarded: int      # readable videos too short for the protocol
    fingerprint: str        # changes when a selected video, its length or its file changes

    def keys(self) -> list[str]:
        return [it.key for it in self.dataset.index.items]

    def starts(self) -> list[int]:
        """The first frame of each selected clip."""
        ds = self.dataset
        return [int(ds.frame_indices(i, offset_position(i))[0]) for i in range(len(ds))]


def stylegan_v_selection(data_cfg, split: str, num_videos: Optional[int] = None) -> Selection:
    """The first ``num_videos`` videos of the split that StyleGAN-V would keep (all of them when None).

    Frames are decoded from the dataset's own files at the protocol's offsets, cropped and resized by
    ``data.resolution`` as in training (StyleGAN-V's copies were converted to JPG frames, LANCZOS-resized,
    beforehand); ``data.cache`` is not used.
    """
    from vfusion.data.api import build_listing
    from vfusion.data.errors import DatasetError
    from vfusion.data.index import VideoIndex, build_index
    from vfusion.data.sources import Listing
    from vfusion.data.video_dataset import ClipDataset

    t, s = int(data_cfg.num_frames), int(data_cfg.frame_stride)
    listing = build_listing(data_cfg, split)
    ordered = Listing(dataset=listing.dataset, items=sorted(listing.items, key=lambda it: sort_key(it.path)),
                      class_names=listing.class_names, description=listing.description, missing=listing.missing)
    need = min_length(t, s)
    try:
        # an index of clips of T*s consecutive frames keeps exactly the videos of at least T*s frames
        index = build_index(ordered, need, 1, "skip", strict=bool(data_cfg.strict), cache_dir=data_cfg.cache_dir,
                            progress=False)
    except DatasetError as err:
        if "no usable video" not in str(err):
            raise
        raise DatasetError(f"no video of {listing.description} has the {need} frames (num_frames {t} x "
                           f"frame_stride {s}) eval.protocol=stylegan_v asks for") from None
    n = len(index.items) if num_videos is None else min(int(num_videos), len(index.items))
    kept = VideoIndex(listing=ordered, items=index.items[:n], lengths=index.lengths[:n])
    dataset = ClipDataset(kept, t, s, int(data_cfg.resolution), short_policy="skip", train=False,
                          random_flip=False, seed=OFFSET_SEED, strict=bool(data_cfg.strict),
                          class_conditional=bool(data_cfg.class_conditional))
    return Selection(dataset=dataset, num_kept=len(index.items), num_discarded=index.skipped_short,
                     fingerprint=kept.fingerprint())


def selection_info(sel: Selection, num_frames: int, stride: int) -> dict:
    """What metrics.json says about a stylegan_v selection."""
    keys = sel.keys()
    return {"selection": SGV_SELECTION, "min_frames": min_length(num_frames, stride), "offset_seed": OFFSET_SEED,
            "num_discarded_short": sel.num_discarded, "selection_fingerprint": sel.fingerprint,
            "first_video": keys[0] if keys else None, "last_video": keys[-1] if keys else None}


# --------------------------------------------------------------------------- stylegan_v on a folder of videos

def stylegan_v_folder(files: Sequence[Path], num_videos: int, num_frames: int, stride: int,
                      lengths: Sequence[int]) -> tuple[list[Path], list[int], int]:
    """(the first ``num_videos`` files StyleGAN-V keeps, their clip starts, how many were too short).

    ``files`` and ``lengths`` (their frame counts) in any order; they are sorted here.
    """
    order = sorted(range(len(files)), key=lambda k: sort_key(str(files[k])))
    need = min_length(num_frames, stride)
    kept = [k for k in order if lengths[k] >= need]
    chosen = kept[:num_videos]
    starts = [clip_start(lengths[k], num_frames, stride, offset_position(i)) for i, k in enumerate(chosen)]
    short = len(files) - len(kept)
    if short:
        warnings.warn(f"eval.protocol=stylegan_v: {short} real video(s) have fewer than {need} frames "
                      f"({num_frames} frames x stride {stride}): discarded", stacklevel=2)
    return [files[k] for k in chosen], starts, short


def load_real_config(path, overrides=None):
    """An experiment YAML read for its real clips: the schema, then the data and eval sections' checks."""
    from vfusion.config import ConfigError, load_config
    from vfusion.data.registry import check_data_section

    cfg = load_config(path, overrides)
    try:
        check_data_section(cfg)
        check_eval_section(cfg)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
    return cfg


def check_eval_section(cfg) -> None:
    """The ``eval`` section: a known protocol, and a real split it would read."""
    from vfusion.config import ConfigError, at_least, check_choice
    from vfusion.data.registry import SPLITS

    e = cfg.eval
    check_choice(e.protocol, PROTOCOLS, "eval.protocol")
    if e.real_split is not None:
        check_choice(e.real_split, SPLITS, "eval.real_split")
        preset = stylegan_v_split(cfg.data.dataset)
        if e.protocol == "stylegan_v" and e.real_split != preset:
            raise ConfigError(f"config key 'eval.real_split' is '{e.real_split}' but eval.protocol=stylegan_v "
                              f"reads the '{preset}' split of {cfg.data.dataset}; unset eval.real_split or use "
                              "eval.protocol=vfusion")
    at_least(cfg, ("eval.num_videos", "eval.batch_size"), 1)
