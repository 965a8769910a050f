"""The one evaluation core: two sets of clips -> detectors -> metric values + protocol.

:func:`evaluate` takes a real and a fake :class:`ClipSource`, accumulates both sides one batch at a time, checks
that the clips match, computes the metrics and returns (and writes) the result dict; the entry points in
``evaluate.py`` only build the two sources. The metrics are described in docs/protocols.md: StyleGAN-V FVD and KVD
on the I3D Kinetics-400 logits, per-frame FID, Inception Scores, and per-clip pixel statistics next to the same mean
over the real clips (``_real``). I3D sees frames resized to 224x224, so clips smaller than that (the 32x32 of the
study runs) are UPSAMPLED: such an FVD carries its protocol in its name and is not comparable with a published
``fvd2048_16f`` at 128/256 px. The protocol preset (``protocols.py``) decides which real clips are read, and the
names of the metrics that depend on them end with its suffix. Every clip, real or generated, is first quantised to
the 256 levels of a video file (as StyleGAN-V does with generated frames); memory does not grow with N apart from
the I3D features / class probabilities (N × 400 float64) that KVD and IS need.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Protocol, Sequence

import numpy as np
import torch

from vfusion.errors import UserError
from vfusion.evaluation import metrics as M
from vfusion.evaluation.detectors import Detectors
from vfusion.evaluation.features import FeatureStats, RowBuffer
from vfusion.evaluation.fid import FrameFID
from vfusion.evaluation.limits import Keys, check_counts
from vfusion.evaluation.protocols import DEFAULT_PROTOCOL, SGV_CHOICES, name_suffix
from vfusion.evaluation.clip_stats import CLIP_STATISTICS, STATISTIC_OF, metric_values, needed

KVD_SEED = 0
# how count and frame errors name their fix when the caller does not say (a run's config or its CLI flags)
RUN_KEYS = Keys(clips="--num-videos (eval.num_videos)", frames="data.num_frames", metrics="--metrics (eval.metrics)")


# --------------------------------------------------------------------------- what the core is given

# what a real-side cache can hold: I3D statistics, the FID real state, the rows of each per-clip statistic
CACHED = ("i3d_k400", "inception_v3", *CLIP_STATISTICS)


class StatsCache(Protocol):
    """Cached statistics of a real clip source (see ``real_stats.DatasetStatsCache``).

    States by name (``CACHED``): ``i3d_k400`` a ``FeatureStats.state()``, ``inception_v3`` the
    FID real state, and per statistic of ``clip_stats.CLIP_STATISTICS`` ``{"values": (N, k) array}``.
    """

    def load(self, det: Detectors, needs: Sequence[str]) -> dict[str, dict]:
        """The states among ``needs`` that the cache holds for these detectors."""

    def save(self, det: Detectors, states: dict[str, dict]) -> None:
        """Store what was computed this time."""


@dataclass
class ClipSource:
    """One set of clips for :func:`evaluate`.

    batches: batches ``(B, C, T, H, W)`` in [-1, 1], read lazily (a generator), once; or ``(clips,
    labels)`` pairs, labels ``(B,)`` indices into ``class_names`` (what the object metrics need).
    info: what metrics.json records under ``protocol.real`` / ``protocol.fake``.
    desc: the progress bar's label; what: how error messages name the clips (default desc).
    num: how many clips ``batches`` yields (progress bar; a source that yields another
    number is an error); the real side's count when its statistics all come from the cache.
    cache: real side only. Without a cache the clips are always read; with one, only when
    the cache lacks something the metrics need (and what was computed is saved).
    """

    batches: Iterable[torch.Tensor]
    info: dict
    desc: str = "clips"
    num: Optional[int] = None
    cache: Optional[StatsCache] = None
    what: Optional[str] = None
    class_names: Optional[Sequence[str]] = None


# --------------------------------------------------------------------------- one side's accumulator

def quantize(videos: torch.Tensor) -> torch.Tensor:
    """Round [-1, 1] values to the 256 levels a uint8 video file can hold."""
    return ((videos.float().clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


class _Side:
    """Everything accumulated for one set of clips, fed one batch at a time."""

    def __init__(self, det: Detectors, i3d_stats: bool = False, k400_probs: bool = False,
                 c3d_probs: bool = False, fid: Optional[FrameFID] = None, fid_real: bool = False,
                 stats: Sequence[str] = (), class_names: Optional[Sequence[str]] = None):
        self.det = det
        self.i3d = FeatureStats(keep_features=True) if i3d_stats else None
        self.k400 = RowBuffer() if k400_probs else None
        self.c3d = RowBuffer() if c3d_probs else None
        self.fid, self.fid_real = fid, fid_real
        self.stats = {name: RowBuffer() for name in stats}  # per clip: the rows of each clip statistic
        self.class_names = class_names
        self.num = 0
        self.clip_shape: Optional[tuple[int, ...]] = None

    @property
    def idle(self) -> bool:
        return self.i3d is None and self.k400 is None and self.c3d is None and self.fid is None and not self.stats

    @torch.no_grad()
    def update(self, videos: torch.Tensor, labels: Optional[torch.Tensor] = None) -> None:
        if videos.dim() != 5:
            raise ValueError(f"expected a batch of clips (B, C, T, H, W), got shape {tuple(videos.shape)}")
        shape = tuple(videos.shape[1:])
        if self.clip_shape is None:
            self.clip_shape = shape
        elif shape != self.clip_shape:
            raise UserError(f"clips of different shapes in one set: {self.clip_shape} and {shape} (C, T, H, W)")
        videos = quantize(videos).to(self.det.device)
        if self.i3d is not None or self.k400 is not None:
            logits = self.det.i3d(videos).detach().double().cpu()
            if self.i3d is not None:
                self.i3d.update(logits)
            if self.k400 is not None:
                self.k400.append(M.softmax(logits.numpy()))
        if self.c3d is not None:
            t = videos.shape[2]
            if t < 16:
                raise UserError(f"is_ucf_c3d needs clips of at least 16 frames, these have {t}")
            logits = self.det.c3d(videos[:, :, :16]).detach().double().cpu().numpy()
            self.c3d.append(M.softmax(logits))
        if self.fid is not None:
            self.fid.update(videos, real=self.fid_real)
        if self.stats and videos.shape[2] < 2:
            raise UserError(f"{', '.join(self.stats)} statistics need clips of at least 2 frames, these have "
                            f"{videos.shape[2]}")
        for name, rows in self.stats.items():
            stat = CLIP_STATISTICS[name]
            if stat.labelled and (labels is None or self.class_names is None):
                raise UserError(f"the {name} metrics need each clip's class: evaluate a run or a dataset of "
                                f"labelled clips, not a folder of videos")
            rows.append(stat.compute(videos, None if labels is None else labels.tolist(), self.class_names or ()))
        self.num += videos.shape[0]


def _consume(batches: Iterable[torch.Tensor], side: _Side, desc: str, total: Optional[int],
             progress: bool) -> None:
    """Feed batches to one side, one batch in flight at a time, with a tqdm bar."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="clip", disable=not progress, leave=False)
    try:
        for item in batches:
            videos, labels = item if isinstance(item, (tuple, list)) else (item, None)
            side.update(videos, labels)
            bar.update(videos.shape[0])
    finally:
        bar.close()


def _need_i3d(metrics: Sequence[str]) -> bool:
    return bool({"fvd", "kvd"} & set(metrics))


def _fid_for(metrics: Sequence[str], det: Detectors) -> Optional[FrameFID]:
    if "fid" not in metrics:
        return None
    if det.inception is None:
        raise UserError("metric fid needs the Inception-v3 feature network (run `vfusion weights fetch`)")
    return FrameFID(det.inception, device=det.device)


def _fake_side(metrics: Sequence[str], det: Detectors, fid: Optional[FrameFID],
               class_names: Optional[Sequence[str]] = None) -> _Side:
    return _Side(det, i3d_stats=_need_i3d(metrics), k400_probs="is_k400_i3d" in metrics,
                 c3d_probs="is_ucf_c3d" in metrics, fid=fid, fid_real=False, stats=needed(metrics),
                 class_names=class_names)


def _read(src: ClipSource, side: _Side, progress: bool) -> None:
    _consume(src.batches, side, src.desc, src.num, progress)
    if src.num is not None and side.num != src.num:
        raise RuntimeError(f"{src.what or src.desc}: {side.num} clips were yielded, {src.num} were asked for")


@dataclass
class RealSide:
    """The real side once read: its I3D statistics and the rows of its per-clip statistics (the FID real
    state is in the FrameFID)."""

    i3d: Optional[FeatureStats]
    num: int
    clip_shape: Optional[tuple[int, ...]]  # None when no clip was read (all from the cache)
    cache_hit: Optional[dict[str, bool]]   # None without a cache
    stats: Optional[dict[str, np.ndarray]] = None  # statistic name -> (N, k) rows


def read_real(src: ClipSource, metrics: Sequence[str], det: Detectors, fid: Optional[FrameFID],
              progress: bool = True) -> RealSide:
    """Accumulate the real side: from ``src.cache`` what it holds, from the clips the rest."""
    need_i3d, stats = _need_i3d(metrics), needed(metrics)
    needs = [name for name, on in (("i3d_k400", need_i3d), ("inception_v3", fid is not None)) if on] + stats
    cached = src.cache.load(det, needs) if src.cache is not None else {}
    i3d = FeatureStats.from_state(cached["i3d_k400"]) if "i3d_k400" in cached else None
    rows = {name: np.asarray(cached[name]["values"], np.float64) for name in stats if name in cached}
    side = _Side(det, i3d_stats=need_i3d and i3d is None,
                 fid=fid if (fid is not None and "inception_v3" not in cached) else None, fid_real=True,
                 stats=[name for name in stats if name not in rows], class_names=src.class_names)
    if fid is not None and "inception_v3" in cached:
        fid.load_real_state(cached["inception_v3"])
    cache_hit = None
    if src.cache is not None:  # the detector entries always, the statistics asked for
        cache_hit = {name: name in cached for name in CACHED if name not in CLIP_STATISTICS or name in stats}
    read = src.cache is None or not side.idle
    if read:
        _read(src, side, progress)
        if side.i3d is not None:
            i3d = side.i3d
        computed = {}
        if side.num:
            for name, buf in side.stats.items():
                rows[name] = buf.array().copy()
                computed[name] = {"values": rows[name]}
        if src.cache is not None:
            if side.i3d is not None:
                computed["i3d_k400"] = side.i3d.state()
            if side.fid is not None:
                computed["inception_v3"] = fid.real_state()
            src.cache.save(det, computed)
    num = src.num if src.num is not None else side.num
    return RealSide(i3d=i3d, num=num, clip_shape=side.clip_shape if read else None, cache_hit=cache_hit, stats=rows)


def _check_match(real_shape, fake_shape, what: str) -> None:
    if real_shape and fake_shape and tuple(real_shape) != tuple(fake_shape):
        raise UserError(f"real clips are {tuple(real_shape)} (C, T, H, W) but {what} are {tuple(fake_shape)}; "
                        f"evaluate clips of the same frames and resolution (with a config as --real: --set "
                        f"data.num_frames=T --set data.resolution=H)")


# --------------------------------------------------------------------------- metric values and protocol

def compute_metrics(metrics: Sequence[str], real_i3d: Optional[FeatureStats], fake: _Side,
                    fid: Optional[FrameFID], num_videos: int, num_frames: int, *,
                    real_stats: Optional[dict[str, np.ndarray]] = None, suffix: str = "") -> dict[str, float]:
    """Named values: ``fvd{N}_{T}f`` etc. (N = generated clips, T = frames per clip).

    ``fvd`` / ``kvd`` / ``fid{N}_{T}f``; ``is_k400_i3d{N}_{T}f`` (the softmax of the I3D Kinetics-400 logits: works
    out of the box, but is NOT the UCF-101 protocol) and ``is_ucf_c3d{N}_16f`` (TGAN/StyleGAN-V UCF-101 IS with a
    user-supplied C3D), each IS with a ``_std`` entry; ``flicker`` / ``drift`` / ``motion{N}_{T}f`` (with
    ``motion_ratio{N}_{T}f``) and ``object_travel`` / ``object_jump`` / ``object_seen``, each next to the same mean
    over the real clips, ``..._real``.

    ``real_stats``: the real side's rows of the clip statistics the metrics need. ``suffix`` (the
    protocol's, ``protocols.name_suffix``) ends the names of the values that depend on the real clips:
    FVD, KVD, FID, the ``_real`` references and the ratios.
    """
    n, t = num_videos, num_frames
    out: dict[str, float] = {}
    for m in metrics:
        if m == "fvd":
            out[f"fvd{n}_{t}f{suffix}"] = M.frechet_distance(real_i3d.mean, real_i3d.cov(), fake.i3d.mean,
                                                             fake.i3d.cov())
        elif m == "kvd":
            out[f"kvd{n}_{t}f{suffix}"] = M.kernel_distance(real_i3d.features(), fake.i3d.features(),
                                                            seed=KVD_SEED)[0]
        elif m == "fid":
            out[f"fid{n}_{t}f{suffix}"] = fid.compute()
        elif m in STATISTIC_OF:
            name = STATISTIC_OF[m]
            out.update(metric_values(m, fake.stats[name].array(), real_stats[name], n, t, suffix))
        elif m == "is_k400_i3d":
            mean, std = M.inception_score(fake.k400.array())
            out[f"is_k400_i3d{n}_{t}f"], out[f"is_k400_i3d{n}_{t}f_std"] = mean, std
        elif m == "is_ucf_c3d":
            mean, std = M.inception_score(fake.c3d.array())
            out[f"is_ucf_c3d{n}_16f"], out[f"is_ucf_c3d{n}_16f_std"] = mean, std
    return out


def _protocol_notes(metrics: Sequence[str], num_fake: int, num_real: int, clip_shape,
                    protocol: str = DEFAULT_PROTOCOL) -> dict:
    t, h, w = clip_shape[1], clip_shape[2], clip_shape[3]
    p: dict[str, Any] = {"protocol": protocol, "name_suffix": name_suffix(protocol),
                         "num_real": num_real, "num_fake": num_fake, "num_frames": t, "resolution": [h, w],
                         "quantized_to_uint8": True}
    if protocol == "stylegan_v":
        p["protocol_choices"] = dict(SGV_CHOICES)
    if {"fvd", "kvd", "is_k400_i3d"} & set(metrics):
        p["i3d"] = {"features": "Kinetics-400 logits averaged over time (400-d)",
                    "input": f"{h}x{w} resized bilinearly to 224x224, values in [-1, 1]"
                             + (" (upsampled)" if min(h, w) < 224 else "")}
    if "fvd" in metrics:
        p["fvd"] = {"covariance": "population (1/N), as StyleGAN-V"}
    if "kvd" in metrics:
        p["kvd"] = {"kernel": "polynomial degree 3, gamma=1/400, coef0=1", "estimator": "unbiased MMD^2",
                    "num_subsets": M.KVD_NUM_SUBSETS,
                    "subset_size": min(num_real, num_fake, M.KVD_MAX_SUBSET_SIZE), "seed": KVD_SEED,
                    "scale": "MMD^2 as computed (not x1000 as StyleGAN-V reports KID)"}
    if "fid" in metrics:
        p["fid"] = {"images": f"all {t} frames of every clip ({num_fake * t} generated frames)",
                    "features": "Inception-v3 pool3 (2048-d), 299x299", "implementation": "torchmetrics"}
    if {"is_k400_i3d", "is_ucf_c3d"} & set(metrics):
        p["is"] = {"num_splits": M.IS_NUM_SPLITS, "std": "population std over splits",
                   "is_k400_i3d": "softmax of the I3D Kinetics-400 logits (not the UCF-101 C3D protocol)",
                   "is_ucf_c3d": "C3D fine-tuned on UCF-101, first 16 frames, short side 128, center crop 112"}
    for name in needed(metrics):
        p[name] = {**CLIP_STATISTICS[name].describe(), "real": "the same means over the real clips (name ending _real)"}
    counts = num_fake == 2048 and t == 16 and min(h, w) >= 128 and num_real >= 2048
    comparable = counts and protocol == "stylegan_v"
    p["comparable_to_published"] = comparable
    if not counts:
        p["note"] = (f"{num_fake} generated / {num_real} real clips of {t} frames at {h}x{w}: read the numbers "
                     f"under their protocol names only; published fvd2048_16f uses 2048 clips of 16 frames "
                     f"at 128 or 256 px")
    elif not comparable:
        p["note"] = (f"eval.protocol={protocol}: the real clips are not StyleGAN-V's selection (first N videos "
                     f"in sorted order, random offsets); use eval.protocol=stylegan_v for published fvd2048_16f")
    return p


def _finish(result: dict, out: Optional[str | Path], start: float) -> dict:
    from vfusion.rundir import write_result
    from vfusion.utils.io import environment_info

    result["wall_time_s"] = round(time.time() - start, 3)
    result["created"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    result["environment"] = environment_info()
    if out is not None:
        write_result(out, result)
    return result


# --------------------------------------------------------------------------- the core

def evaluate(real: ClipSource, fake: ClipSource, metrics: Sequence[str], detectors: Detectors, *,
             out: Optional[str | Path] = None, kind: Optional[str] = None, progress: bool = True,
             start: Optional[float] = None, protocol: str = DEFAULT_PROTOCOL, keys: Keys = RUN_KEYS) -> dict:
    """Metrics of ``fake`` against ``real``; returns the result dict (also written to ``out`` when given).

    ``metrics`` is a canonical list (``detectors.expand_metrics``); N in the metric names is
    the number of fake clips, T their frames. The real side is read first, then the fake
    one. ``kind`` (e.g. ``"real_vs_real"``) is recorded in the result; ``start`` is when
    the caller's work began (``time.time()``), for ``wall_time_s``. ``protocol``: the preset
    that selected the real clips (``protocols.py``): recorded, and it suffixes the names.
    ``keys``: how a count or frame error names its fix (``limits.Keys``).
    """
    start = time.time() if start is None else start
    det = detectors
    check_counts(metrics, real.num, fake.num, keys=keys)  # before any clip is read or sampled
    fid = _fid_for(metrics, det)
    real_side = read_real(real, metrics, det, fid, progress)
    fake_side = _fake_side(metrics, det, fid, fake.class_names)
    _read(fake, fake_side, progress)
    if not fake_side.num:
        raise ValueError(f"{fake.what or fake.desc}: no clips to evaluate")
    _check_match(real_side.clip_shape, fake_side.clip_shape, fake.what or fake.desc)
    check_counts(metrics, real_side.num, fake_side.num, fake_side.clip_shape[1], keys)
    values = compute_metrics(metrics, real_side.i3d, fake_side, fid, fake_side.num, fake_side.clip_shape[1],
                             real_stats=real_side.stats, suffix=name_suffix(protocol))

    notes = _protocol_notes(metrics, fake_side.num, real_side.num, fake_side.clip_shape, protocol)
    notes["real"] = dict(real.info)
    if real_side.cache_hit is not None:
        notes["real"]["cache_hit"] = real_side.cache_hit
    notes["fake"] = dict(fake.info)
    result: dict[str, Any] = {"metrics": values, "metric_names": list(values), "protocol": notes}
    if kind is not None:
        result["kind"] = kind
    result.update(detectors=det.info, device=det.device)
    return _finish(result, out, start)
