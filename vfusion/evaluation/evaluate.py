"""Evaluation orchestration: real clips + generated clips -> detectors -> metrics.json.

Protocols (see ../shared/docs/protocols.md):

* ``fvd{N}_{T}f`` — StyleGAN-V FVD: N real and N generated clips of T frames; the
  I3D Kinetics-400 logits (400-d, averaged over time) of each clip, frames
  resized bilinearly to 224x224 by ``i3d_features`` (clips smaller than 224, e.g.
  the 32x32 of the study runs, are UPSAMPLED: such an FVD carries its protocol in
  its name and is not comparable with published ``fvd2048_16f`` at 128/256 px);
  Fréchet distance with the population covariance (StyleGAN-V).
* ``kvd{N}_{T}f`` — polynomial-kernel MMD² on the same I3D features (100 subsets
  of min(N, 1000), see ``metrics.kernel_distance``).
* ``fid{N}_{T}f`` — per-frame FID, Inception-v3 pool3 of all N·T frames (``fid.py``).
* ``is_k400_i3d{N}_{T}f`` — Inception Score with the softmax of the I3D Kinetics-400
  logits (works out of the box; NOT the UCF-101 protocol).
* ``is_ucf_c3d{N}_16f`` — TGAN/StyleGAN-V UCF-101 IS with a user-supplied C3D
  (16 frames, short side 128, center crop 112; ``c3d.load_c3d``).
  Both IS variants use 10 splits and come with a ``_std`` entry.

Every clip, real or generated, is first quantised to the 256 levels of a video file
(as StyleGAN-V does with generated frames). Generated clips are consumed one batch at
a time, so memory does not grow with N apart from the I3D features / class
probabilities (N × 400 float64) that KVD and IS need. Real statistics of a dataset
are cached (``features.py``); real clips given as a folder are not cached.

Three entry points: :func:`evaluate_run` (a training run: samples with ``generate``),
:func:`evaluate_folders` (``--real PATH --fake DIR``) and :func:`real_vs_real` (two
disjoint halves of the real data: the floor of the metric).
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
from torch import nn

from vfusion.errors import UserError
from vfusion.data import default_num_workers
from vfusion.evaluation import metrics as M
from vfusion.evaluation.clip_sources import SUBSET_SEED, dataset_batches, dataset_subsets, folder_batches, video_files
from vfusion.evaluation.features import FeatureStats, RowBuffer, cache_file, load_cached, save_cached
from vfusion.evaluation.fid import FrameFID

METRIC_CHOICES = ("fvd", "kvd", "fid", "is", "is_k400_i3d", "is_ucf_c3d")
KVD_SEED = 0
CACHE_VERSION = 1
# data keys that do not change which real clips are evaluated (left out of the cache key)
_NOT_IN_KEY = ("batch_size", "num_workers", "strict", "cache", "cache_dir", "split", "eval_split",
               "class_conditional", "labels_from_subfolders", "random_flip")


# --------------------------------------------------------------------------- detectors

@dataclass
class Detectors:
    """The networks metrics need; any may be None when no requested metric uses it.

    i3d: clips (B, C, T, H, W) in [-1, 1] -> (B, 400) Kinetics-400 logits.
    inception: torchmetrics-style feature module, uint8 frames (N, 3, H, W) -> (N, 2048).
    c3d: clips (B, 3, 16, H, W) in [-1, 1] -> (B, 101) UCF-101 logits.
    info: per detector name, what metrics.json records (sha256, path, ...). A detector
    whose info has no sha256 never has its real statistics cached.
    """

    i3d: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    inception: Optional[nn.Module] = None
    c3d: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    info: dict[str, dict] = field(default_factory=dict)
    device: str = "cpu"


def default_device(device: Optional[str] = None) -> str:
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def expand_metrics(metrics: str | Sequence[str], c3d_weights: Optional[str] = None) -> list[str]:
    """Canonical metric list: ``is`` means ``is_k400_i3d`` (+ ``is_ucf_c3d`` when C3D weights are given)."""
    if isinstance(metrics, str):
        metrics = [m for m in metrics.split(",")]
    out: list[str] = []
    for m in (m.strip().lower() for m in metrics):
        if not m:
            continue
        if m not in METRIC_CHOICES:
            raise UserError(f"unknown metric '{m}'; choose from {', '.join(METRIC_CHOICES)}")
        names = ["is_k400_i3d"] + (["is_ucf_c3d"] if c3d_weights else []) if m == "is" else [m]
        out += [n for n in names if n not in out]
    if "is_ucf_c3d" in out and not c3d_weights:
        raise UserError("metric is_ucf_c3d needs a C3D fine-tuned on UCF-101: pass --c3d-weights FILE "
                        "(config: eval.c3d_weights); these weights cannot be downloaded here")
    if not out:
        raise UserError("no metric requested; e.g. --metrics fvd,kvd,fid,is")
    return out


def load_detectors(metrics: Sequence[str], weights_dir: Optional[str] = None, device: Optional[str] = None,
                   c3d_weights: Optional[str] = None) -> Detectors:
    """Load the detectors the metrics need (from the verified weight files)."""
    device = default_device(device)
    det = Detectors(device=device)
    if {"fvd", "kvd", "is_k400_i3d"} & set(metrics):
        from vfusion.evaluation.i3d import i3d_features, load_i3d

        model = load_i3d(weights_dir=weights_dir, device=device)
        det.i3d = lambda v: i3d_features(model, v)
        det.info["i3d_k400"] = dict(model.detector_info)
    if "fid" in metrics:
        from vfusion.evaluation.inception import load_inception

        det.inception = load_inception(weights_dir=weights_dir, device=device)
        det.info["inception_v3"] = dict(det.inception.detector_info)
    if "is_ucf_c3d" in metrics:
        from vfusion.evaluation.c3d import load_c3d

        det.c3d = load_c3d(c3d_weights, device=device)
        det.info["c3d_ucf101"] = dict(det.c3d.detector_info)
    return det


def _check_split(split: str) -> str:
    if split not in ("train", "test", "all"):
        raise UserError(f"real split '{split}' is not one of train, test, all")
    return split


def _sha(det: Detectors, name: str) -> Optional[str]:
    return det.info.get(name, {}).get("sha256")


# --------------------------------------------------------------------------- one side's accumulator

def quantize(videos: torch.Tensor) -> torch.Tensor:
    """Round [-1, 1] values to the 256 levels a uint8 video file can hold."""
    return ((videos.float().clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


class _Side:
    """Everything accumulated for one set of clips, fed one batch at a time."""

    def __init__(self, det: Detectors, i3d_stats: bool = False, k400_probs: bool = False,
                 c3d_probs: bool = False, fid: Optional[FrameFID] = None, fid_real: bool = False):
        self.det = det
        self.i3d = FeatureStats(keep_features=True) if i3d_stats else None
        self.k400 = RowBuffer() if k400_probs else None
        self.c3d = RowBuffer() if c3d_probs else None
        self.fid, self.fid_real = fid, fid_real
        self.num = 0
        self.clip_shape: Optional[tuple[int, ...]] = None

    @property
    def idle(self) -> bool:
        return self.i3d is None and self.k400 is None and self.c3d is None and self.fid is None

    @torch.no_grad()
    def update(self, videos: torch.Tensor) -> None:
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
        self.num += videos.shape[0]


def _consume(batches: Iterable[torch.Tensor], side: _Side, desc: str, total: Optional[int],
             progress: bool) -> None:
    """Feed batches to one side, one batch in flight at a time, with a tqdm bar."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="clip", disable=not progress, leave=False)
    try:
        for videos in batches:
            side.update(videos)
            bar.update(videos.shape[0])
    finally:
        bar.close()


def _real_info(data_cfg, split: str) -> dict:
    d = {k: v for k, v in _to_dict(data_cfg).items() if k not in ("batch_size", "num_workers")}
    d["split"] = split
    d["root"] = str(Path(str(d.get("root", ""))).resolve())
    d["subset_seed"] = SUBSET_SEED
    return d


def _to_dict(cfg) -> dict:
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


# --------------------------------------------------------------------------- real statistics (cached)

def _cache_keys(data_cfg, split: str, num_videos: int, det: Detectors) -> dict[str, dict]:
    base = {k: v for k, v in _to_dict(data_cfg).items() if k not in _NOT_IN_KEY}
    base.update(root=str(Path(str(base.get("root", ""))).resolve()), split=split, num_videos=num_videos,
                subset_seed=SUBSET_SEED, quantized=True, version=CACHE_VERSION)
    return {"i3d_k400": dict(base, detector="i3d_k400", sha256=_sha(det, "i3d_k400")),
            "inception_v3": dict(base, detector="inception_v3", sha256=_sha(det, "inception_v3"))}


def real_dataset_stats(data_cfg, split: str, num_videos: int, det: Detectors, need_i3d: bool,
                       fid: Optional[FrameFID], cache_dir: Optional[str | Path], batch_size: int,
                       progress: bool = True) -> tuple[Optional[FeatureStats], dict]:
    """I3D stats of the real clips (and the real side of ``fid``), from the cache when possible."""
    dataset, (indices,) = dataset_subsets(data_cfg, split, [num_videos])
    keys = _cache_keys(data_cfg, split, num_videos, det)
    for key in keys.values():  # a dataset that gained or lost videos selects other clips
        key["num_available"] = len(dataset)
    report: dict[str, Any] = {"num_real": len(indices), "num_available": len(dataset)}
    i3d_stats, fid_state = None, None
    if cache_dir is not None:
        if need_i3d and keys["i3d_k400"]["sha256"]:
            state = load_cached(cache_file(cache_dir, keys["i3d_k400"]), keys["i3d_k400"])
            i3d_stats = FeatureStats.from_state(state) if state is not None else None
        if fid is not None and keys["inception_v3"]["sha256"]:
            fid_state = load_cached(cache_file(cache_dir, keys["inception_v3"]), keys["inception_v3"])
    side = _Side(det, i3d_stats=need_i3d and i3d_stats is None,
                 fid=fid if (fid is not None and fid_state is None) else None, fid_real=True)
    if fid is not None and fid_state is not None:
        fid.load_real_state(fid_state)
    report["cache_hit"] = {"i3d_k400": need_i3d and i3d_stats is not None,
                           "inception_v3": fid is not None and fid_state is not None}
    if not side.idle:
        _consume(dataset_batches(dataset, indices, batch_size, default_num_workers(data_cfg)), side,
                 f"real clips ({split})", len(indices), progress)
        if side.i3d is not None:
            i3d_stats = side.i3d
        if cache_dir is not None:
            if side.i3d is not None and keys["i3d_k400"]["sha256"]:
                save_cached(cache_file(cache_dir, keys["i3d_k400"]), side.i3d.state(), keys["i3d_k400"])
            if side.fid is not None and keys["inception_v3"]["sha256"]:
                save_cached(cache_file(cache_dir, keys["inception_v3"]), fid.real_state(), keys["inception_v3"])
        report["clip_shape"] = list(side.clip_shape or [])
    return i3d_stats, report


# --------------------------------------------------------------------------- metric values

def compute_metrics(metrics: Sequence[str], real_i3d: Optional[FeatureStats], fake: _Side,
                    fid: Optional[FrameFID], num_videos: int, num_frames: int) -> dict[str, float]:
    """Named values: ``fvd{N}_{T}f`` etc. (N = generated clips, T = frames per clip)."""
    n, t = num_videos, num_frames
    out: dict[str, float] = {}
    for m in metrics:
        if m == "fvd":
            out[f"fvd{n}_{t}f"] = M.frechet_distance(real_i3d.mean, real_i3d.cov(), fake.i3d.mean, fake.i3d.cov())
        elif m == "kvd":
            out[f"kvd{n}_{t}f"] = M.kernel_distance(real_i3d.features(), fake.i3d.features(), seed=KVD_SEED)[0]
        elif m == "fid":
            out[f"fid{n}_{t}f"] = fid.compute()
        elif m == "is_k400_i3d":
            mean, std = M.inception_score(fake.k400.array())
            out[f"is_k400_i3d{n}_{t}f"], out[f"is_k400_i3d{n}_{t}f_std"] = mean, std
        elif m == "is_ucf_c3d":
            mean, std = M.inception_score(fake.c3d.array())
            out[f"is_ucf_c3d{n}_16f"], out[f"is_ucf_c3d{n}_16f_std"] = mean, std
    return out


def _protocol_notes(metrics: Sequence[str], num_fake: int, num_real: int, clip_shape) -> dict:
    t, h, w = clip_shape[1], clip_shape[2], clip_shape[3]
    p: dict[str, Any] = {"num_real": num_real, "num_fake": num_fake, "num_frames": t, "resolution": [h, w],
                         "quantized_to_uint8": True}
    if {"fvd", "kvd", "is_k400_i3d"} & set(metrics):
        p["i3d"] = {"features": "Kinetics-400 logits averaged over time (400-d)",
                    "input": f"{h}x{w} resized bilinearly to 224x224, values in [-1, 1]"
                             + (" (upsampled)" if min(h, w) < 224 else "")}
    if "fvd" in metrics:
        p["fvd"] = {"covariance": "population (1/N), as StyleGAN-V"}
    if "kvd" in metrics:
        p["kvd"] = {"kernel": "polynomial degree 3, gamma=1/400, coef0=1", "estimator": "unbiased MMD^2",
                    "num_subsets": M.KVD_NUM_SUBSETS,
                    "subset_size": min(num_real, num_fake, M.KVD_MAX_SUBSET_SIZE), "seed": KVD_SEED}
    if "fid" in metrics:
        p["fid"] = {"images": f"all {t} frames of every clip ({num_fake * t} generated frames)",
                    "features": "Inception-v3 pool3 (2048-d), 299x299", "implementation": "torchmetrics"}
    if {"is_k400_i3d", "is_ucf_c3d"} & set(metrics):
        p["is"] = {"num_splits": M.IS_NUM_SPLITS, "std": "population std over splits",
                   "is_k400_i3d": "softmax of the I3D Kinetics-400 logits (not the UCF-101 C3D protocol)",
                   "is_ucf_c3d": "C3D fine-tuned on UCF-101, first 16 frames, short side 128, center crop 112"}
    comparable = num_fake == 2048 and t == 16 and min(h, w) >= 128 and num_real >= 2048
    p["comparable_to_published"] = comparable
    if not comparable:
        p["note"] = (f"{num_fake} generated / {num_real} real clips of {t} frames at {h}x{w}: read the numbers "
                     f"under their protocol names only; published fvd2048_16f uses 2048 clips of 16 frames "
                     f"at 128 or 256 px")
    return p


def _finish(result: dict, out: Optional[str | Path], start: float) -> dict:
    from vfusion.utils.io import atomic_write_json, environment_info

    result["wall_time_s"] = round(time.time() - start, 3)
    result["created"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    result["environment"] = environment_info()
    if out is not None:
        atomic_write_json(out, result)
    return result


def _fid_for(metrics: Sequence[str], det: Detectors) -> Optional[FrameFID]:
    if "fid" not in metrics:
        return None
    if det.inception is None:
        raise UserError("metric fid needs the Inception-v3 feature network (run `vfusion weights fetch`)")
    return FrameFID(det.inception, device=det.device)


def _fake_side(metrics: Sequence[str], det: Detectors, fid: Optional[FrameFID]) -> _Side:
    return _Side(det, i3d_stats=bool({"fvd", "kvd"} & set(metrics)), k400_probs="is_k400_i3d" in metrics,
                 c3d_probs="is_ucf_c3d" in metrics, fid=fid, fid_real=False)


def _check_match(real_shape, fake_shape, what: str) -> None:
    if real_shape and fake_shape and tuple(real_shape) != tuple(fake_shape):
        raise UserError(f"real clips are {tuple(real_shape)} (C, T, H, W) but {what} are {tuple(fake_shape)}; "
                        f"evaluate clips of the same frames and resolution (with a config as --real: --set "
                        f"data.num_frames=T --set data.resolution=H)")


# --------------------------------------------------------------------------- entry points

def evaluate_run(run_dir: str | Path, metrics: str | Sequence[str] = ("fvd", "kvd", "fid", "is"),
                 num_videos: Optional[int] = None, real_split: Optional[str] = None, sampler: Optional[str] = None,
                 steps: Optional[int] = None, seed: Optional[int] = None, guidance_scale: Optional[float] = None,
                 batch_size: Optional[int] = None, device: Optional[str] = None, weights_dir: Optional[str] = None,
                 c3d_weights: Optional[str] = None, out: Optional[str | Path] = None,
                 detectors: Optional[Detectors] = None, progress: bool = True) -> dict:
    """Sample ``num_videos`` clips from a run and write ``<run_dir>/metrics.json`` (or ``out``).

    Unset arguments come from the run's resolved config (``eval.*``, ``sample.*``,
    ``data.eval_split``). Returns the dict written.
    """
    from vfusion.training.inference import generate, load_run_config

    start = time.time()
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    ev, sc = cfg.eval, cfg.sample
    c3d_weights = c3d_weights or ev.get("c3d_weights")
    metrics = expand_metrics(metrics, c3d_weights)
    num_videos = int(num_videos or ev.num_videos)
    split = _check_split(real_split or ev.get("real_split") or cfg.data.eval_split)
    sampler, steps = sampler or sc.sampler, int(steps or sc.steps)
    seed = int(ev.seed if seed is None else seed)
    guidance_scale = float(sc.guidance_scale if guidance_scale is None else guidance_scale)
    batch_size = int(batch_size or ev.batch_size)
    weights_dir = weights_dir or ev.weights_dir
    det = detectors or load_detectors(metrics, weights_dir, device, c3d_weights)
    cache_dir = ev.get("real_stats_dir") or str(Path(cfg.data.cache_dir) / "real_stats")

    fid = _fid_for(metrics, det)
    need_i3d = bool({"fvd", "kvd"} & set(metrics))
    real_i3d, real_report = real_dataset_stats(cfg.data, split, num_videos, det, need_i3d, fid, cache_dir,
                                               batch_size, progress)
    fake = _fake_side(metrics, det, fid)
    batches = (v for v, _labels in generate(run_dir, num_videos, sampler=sampler, steps=steps, seed=seed,
                                             guidance_scale=guidance_scale, batch_size=batch_size,
                                             device=det.device, progress=False))
    _consume(batches, fake, f"generated clips ({sampler}, {steps} steps)", num_videos, progress)
    if fake.num != num_videos:
        raise RuntimeError(f"generate() yielded {fake.num} clips, {num_videos} were asked for")
    _check_match(real_report.get("clip_shape"), fake.clip_shape, "the generated clips")
    values = compute_metrics(metrics, real_i3d, fake, fid, num_videos, fake.clip_shape[1])

    protocol = _protocol_notes(metrics, num_videos, real_report["num_real"], fake.clip_shape)
    protocol["real"] = dict(_real_info(cfg.data, split), source="dataset", num_available=real_report["num_available"],
                            stats_cache=str(cache_dir), cache_hit=real_report["cache_hit"])
    protocol["fake"] = {"source": "run", "run_dir": str(run_dir.resolve()), "model": cfg.model.name,
                        "sampler": sampler, "steps": steps, "guidance_scale": guidance_scale, "seed": seed,
                        "batch_size": batch_size}
    result = {"metrics": values, "metric_names": list(values), "protocol": protocol,
              "detectors": det.info, "device": det.device}
    return _finish(result, run_dir / "metrics.json" if out is None else out, start)


def evaluate_folders(real: str | Path, fake: str | Path, metrics: str | Sequence[str] = ("fvd", "kvd", "fid"),
                     num_videos: Optional[int] = None, num_frames: Optional[int] = None, real_stride: int = 1,
                     real_split: Optional[str] = None, overrides: Optional[list[str]] = None, batch_size: int = 8,
                     device: Optional[str] = None, weights_dir: Optional[str] = None,
                     c3d_weights: Optional[str] = None, out: Optional[str | Path] = None,
                     detectors: Optional[Detectors] = None, progress: bool = True) -> dict:
    """Metrics between a real source (a folder of videos, or a dataset config YAML) and a folder of fakes.

    Fakes: every video under ``fake`` (the first ``num_videos`` when given), the first
    ``num_frames`` frames (default: all frames of the first fake). A real folder's clips
    are the first ``num_frames`` frames at ``real_stride`` of each file, short-side
    resized and center cropped to the fakes' size; a config's real clips come from its
    dataset (``real_split`` or ``data.eval_split``) and are cached.
    """
    from vfusion.utils.video import read_video

    start = time.time()
    metrics = expand_metrics(metrics, c3d_weights)
    fake_files = video_files(fake)
    if num_videos:
        if len(fake_files) < num_videos:
            raise UserError(f"{fake} holds {len(fake_files)} videos; --num-videos asks for {num_videos}")
        fake_files = fake_files[:num_videos]
    first = read_video(fake_files[0])
    num_frames = int(num_frames or first.shape[1])
    size = (int(first.shape[2]), int(first.shape[3]))
    det = detectors or load_detectors(metrics, weights_dir, device, c3d_weights)
    fid = _fid_for(metrics, det)
    need_i3d = bool({"fvd", "kvd"} & set(metrics))
    n = len(fake_files)

    real = Path(real)
    if real.suffix.lower() in (".yaml", ".yml"):
        from vfusion.config import load_config

        cfg = load_config(real, overrides=overrides)
        split = _check_split(real_split or cfg.eval.get("real_split") or cfg.data.eval_split)
        cache_dir = cfg.eval.get("real_stats_dir") or str(Path(cfg.data.cache_dir) / "real_stats")
        if cfg.data.num_frames != num_frames:
            raise UserError(f"{real} has data.num_frames={cfg.data.num_frames} but the fake clips are evaluated "
                            f"with {num_frames} frames; pass --set data.num_frames={num_frames} or --num-frames")
        real_i3d, rep = real_dataset_stats(cfg.data, split, n, det, need_i3d, fid, cache_dir, batch_size, progress)
        real_info = dict(_real_info(cfg.data, split), source="dataset", config=str(real.resolve()),
                         num_available=rep["num_available"], stats_cache=str(cache_dir), cache_hit=rep["cache_hit"])
        num_real, real_shape = rep["num_real"], rep.get("clip_shape")
    else:
        real_files = video_files(real)[:n]
        side = _Side(det, i3d_stats=need_i3d, fid=fid, fid_real=True)
        _consume(folder_batches(real_files, num_frames, real_stride, size, batch_size), side,
                 "real clips", len(real_files), progress)
        real_i3d, num_real, real_shape = side.i3d, side.num, side.clip_shape
        real_info = {"source": "folder", "path": str(real.resolve()), "frame_stride": real_stride,
                     "clip": f"first {num_frames} frames, short side resized + center crop to {size[0]}x{size[1]}"}

    fake_side = _fake_side(metrics, det, fid)
    _consume(folder_batches(fake_files, num_frames, 1, None, batch_size), fake_side, "fake clips", n, progress)
    _check_match(real_shape, fake_side.clip_shape, f"the clips of {fake}")
    values = compute_metrics(metrics, real_i3d, fake_side, fid, n, num_frames)
    protocol = _protocol_notes(metrics, n, num_real, fake_side.clip_shape)
    protocol["real"] = real_info
    protocol["fake"] = {"source": "folder", "path": str(Path(fake).resolve()), "clip": f"first {num_frames} frames"}
    result = {"metrics": values, "metric_names": list(values), "protocol": protocol,
              "detectors": det.info, "device": det.device}
    return _finish(result, out, start)


def real_vs_real(cfg, num_videos: Optional[int] = None, metrics: str | Sequence[str] = ("fvd", "kvd"),
                 split: Optional[str] = None, batch_size: Optional[int] = None, device: Optional[str] = None,
                 weights_dir: Optional[str] = None, out: Optional[str | Path] = None,
                 detectors: Optional[Detectors] = None, progress: bool = True) -> dict:
    """The metric between two disjoint halves of the real clips (its floor for this N).

    Each half holds ``num_videos`` clips (default ``eval.num_videos``), or half of the
    split when it is smaller; the name carries the per-half N actually used.
    """
    start = time.time()
    metrics = expand_metrics(metrics)
    if {"is_k400_i3d", "is_ucf_c3d"} & set(metrics):
        raise UserError("real-vs-real compares two sets: use fvd, kvd or fid (IS is a property of one set)")
    num_videos = int(num_videos or cfg.eval.num_videos)
    split = _check_split(split or cfg.eval.get("real_split") or cfg.data.eval_split)
    batch_size = int(batch_size or cfg.eval.batch_size)
    det = detectors or load_detectors(metrics, weights_dir or cfg.eval.weights_dir, device)
    fid = _fid_for(metrics, det)
    need_i3d = bool({"fvd", "kvd"} & set(metrics))
    dataset, (idx_a, idx_b) = dataset_subsets(cfg.data, split, [num_videos, num_videos])
    n = min(len(idx_a), len(idx_b))
    idx_a, idx_b = idx_a[:n], idx_b[:n]
    side_a = _Side(det, i3d_stats=need_i3d, fid=fid, fid_real=True)
    side_b = _Side(det, i3d_stats=need_i3d, fid=fid, fid_real=False)
    workers = default_num_workers(cfg.data)
    _consume(dataset_batches(dataset, idx_a, batch_size, workers), side_a, f"real half A ({split})", n, progress)
    _consume(dataset_batches(dataset, idx_b, batch_size, workers), side_b, f"real half B ({split})", n, progress)
    values = compute_metrics(metrics, side_a.i3d, side_b, fid, n, side_b.clip_shape[1])
    protocol = _protocol_notes(metrics, n, n, side_b.clip_shape)
    protocol["real"] = dict(_real_info(cfg.data, split), source="dataset", num_available=len(dataset),
                            halves="two disjoint subsets of a seeded permutation (A: first n, B: next n)")
    protocol["fake"] = {"source": "real half B"}
    result = {"metrics": values, "metric_names": list(values), "protocol": protocol, "kind": "real_vs_real",
              "detectors": det.info, "device": det.device}
    return _finish(result, out, start)
