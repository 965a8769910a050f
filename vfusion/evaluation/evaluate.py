"""Evaluation entry points: each builds a real and a fake clip source and calls the core.

:func:`evaluate_run` evaluates a training run (real clips of its dataset, statistics cached; generated clips from
:func:`run_clip_batches`, or ``fake_batches`` already generated); :func:`evaluate_folders` a folder of generated
clips against a folder of videos or a dataset config YAML; :func:`real_vs_real` two disjoint halves of the real
data, the floor of the metric. Which real clips each mode reads is the protocol preset's (``eval.protocol`` or the
``protocol`` argument: ``vfusion`` | ``stylegan_v``, see ``protocols.py``). The metrics, the accumulation and the
result dict are in ``core.py``; the detectors and the metric names in ``detectors.py``; the cached real statistics
in ``real_stats.py``. The names other modules import from here (``Detectors``, ``expand_metrics``,
``load_detectors``, ``quantize``, ``compute_metrics``, ...) are re-exported.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable, Optional, Sequence

import torch

from vfusion.errors import UserError
from vfusion.data import default_num_workers
from vfusion.data.registry import has_captions
from vfusion.evaluation.clip_sources import (check_same_size, clip_shape, dataset_batches, dataset_subsets,
                                             fake_video_files, folder_batches, video_files)
from vfusion.evaluation.core import _fake_side, _Side  # noqa: F401 - re-exported (the tests' accumulators)
from vfusion.evaluation.core import RUN_KEYS, KVD_SEED, ClipSource, compute_metrics, evaluate, quantize
from vfusion.evaluation.detectors import (METRIC_CHOICES, TEXT_METRICS, Detectors, default_device, expand_metrics,
                                         load_detectors)
from vfusion.evaluation.limits import CLI_KEYS, CONFIG_KEYS, check_counts, check_frames, check_split, floor_metrics
from vfusion.evaluation.protocols import (SGV_SELECTION, check_protocol, load_real_config, min_length, selection_info,
                                          stylegan_v_folder, stylegan_v_selection)
from vfusion.evaluation.protocols import real_split as protocol_split
from vfusion.evaluation.real_stats import CACHE_VERSION, _real_info, dataset_source, real_dataset_stats

__all__ = ["evaluate_run", "evaluate_folders", "real_vs_real", "run_clip_batches", "evaluate", "ClipSource",
           "Detectors", "METRIC_CHOICES", "expand_metrics", "load_detectors", "default_device", "quantize",
           "compute_metrics", "real_dataset_stats", "KVD_SEED", "CACHE_VERSION"]


def _check_split(split: str) -> str:
    from vfusion.data.registry import SPLITS

    if split not in SPLITS:
        raise UserError(f"real split '{split}' is not one of {', '.join(SPLITS)}")
    return split


def _stats_dir(cfg) -> str:
    return cfg.eval.get("real_stats_dir") or str(Path(cfg.data.cache_dir) / "real_stats")


def _split_for(cfg, protocol: str, requested: Optional[str]) -> tuple[str, dict]:
    """(the real split, what metrics.json notes about it): the preset's under stylegan_v, which
    ignores a requested split (noted when it differs), else ``requested`` or the config's."""
    asked = requested or cfg.eval.get("real_split")
    split = _check_split(protocol_split(protocol, cfg.data.dataset, asked, cfg.data.eval_split))
    if asked and asked != split:
        return split, {"split_note": f"real split '{asked}' not used: eval.protocol={protocol} reads '{split}'"}
    return split, {}


# --------------------------------------------------------------------------- a run's generated clips

def run_clip_batches(run_dir: str | Path, settings, device: str) -> Iterable[tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """``settings.num_videos`` clips of a run, batches ``(clips (B, C, T, H, W) in [-1, 1], labels)``, lazily.

    The run's saved samples (``RUN/samples/videos.npy``) when its ``samples.json`` says they were made
    with these settings after the pipeline was written (so a run is sampled once); else sampled from
    the run's pipeline, ``RUN/pipeline/``.
    """
    from vfusion.inference.generate import generate, load_pipeline, saved_sample_batches
    from vfusion.rundir import RunDir

    run = RunDir(run_dir)
    saved = saved_sample_batches(run.samples_dir, settings, newer_than=run.pipeline_index)
    if saved is not None:
        return saved
    return generate(load_pipeline(run.path, device), settings, progress=False)


def evaluate_run(run_dir: str | Path, metrics: str | Sequence[str] = ("fvd", "kvd", "fid", "is"),
                 num_videos: Optional[int] = None, real_split: Optional[str] = None, sampler: Optional[str] = None,
                 steps: Optional[int] = None, seed: Optional[int] = None, guidance_scale: Optional[float] = None,
                 batch_size: Optional[int] = None, device: Optional[str] = None, weights_dir: Optional[str] = None,
                 c3d_weights: Optional[str] = None, out: Optional[str | Path] = None,
                 detectors: Optional[Detectors] = None, progress: bool = True,
                 fake_batches: Optional[Iterable[torch.Tensor]] = None, protocol: Optional[str] = None,
                 clip_model: Optional[str] = None, experiment=None) -> dict:
    """Sample ``num_videos`` clips from a run and write ``<run_dir>/metrics.json`` (or ``out``).

    Unset arguments come from the run's resolved config (``eval.*``, ``sample.*``,
    ``data.eval_split``): ``experiment``'s (a :class:`vfusion.experiment.Experiment`), else the run's saved copy. ``fake_batches``: clips already generated from the run
    (``num_videos`` of them, batches ``(B, C, T, H, W)`` in [-1, 1]) to evaluate instead
    of sampling; ``sampler``, ``steps``, ``seed`` and ``guidance_scale`` should then say
    how they were made (they are recorded). ``protocol`` (default ``eval.protocol``): which
    real clips; ``stylegan_v`` reads its own split and ignores ``real_split``. Returns the
    dict written. A class-conditional run on the embedded dataset also gets the object metrics
    (``objects.py``) when it samples its clips here (their labels index the run's dataset classes).
    ``clipsim`` (text-conditioned runs, ``clip_model`` or ``eval.clip_model``) comes with its real-caption
    reference, ``clipsim{N}_{T}f_real`` (:class:`~vfusion.evaluation.clipsim.RunTexts`).
    """
    from vfusion.rundir import RunDir, settings_from_config

    start = time.time()
    run = RunDir(run_dir)
    run_dir = run.path
    cfg = experiment.config if experiment is not None else run.config()
    ev = cfg.eval
    c3d_weights = c3d_weights or ev.get("c3d_weights")
    metrics = expand_metrics(metrics, c3d_weights)
    text_metrics = [m for m in metrics if m in TEXT_METRICS]
    metrics = [m for m in metrics if m not in TEXT_METRICS]
    settings = settings_from_config(cfg, for_eval=True, num_videos=num_videos, sampler=sampler, steps=steps,
                                    guidance_scale=guidance_scale, seed=seed, batch_size=batch_size)
    settings.check(cfg.diffusion.num_train_timesteps)
    protocol = check_protocol(protocol or ev.get("protocol"))
    split, split_note = _split_for(cfg, protocol, real_split)
    texts = None
    if text_metrics:  # the text of every clip, and a captioned run's prompts (the real clips' captions)
        if fake_batches is not None:
            raise UserError("clipsim scores clips against the prompts they were made from: let the evaluation "
                            "sample them (no fake_batches)")
        from vfusion.evaluation.clipsim import RunTexts

        texts = RunTexts(run, cfg, split, settings.num_videos, clip_model or ev.get("clip_model"), device)
        settings = texts.settings(settings)
    elif fake_batches is None and has_captions(cfg.data.dataset) and settings.prompt is None \
            and settings.prompts is None:
        # a captioned run draws clip i from the caption of real clip i, as text-to-video papers generate one
        # video per test caption: its FVD then compares like with like
        from dataclasses import replace

        from vfusion.evaluation.clipsim import real_captions

        settings = replace(settings, prompts=tuple(real_captions(cfg, split, settings.num_videos)[2]))
    num_videos, sampler, steps = settings.num_videos, settings.sampler, settings.steps
    seed, guidance_scale, batch_size = settings.seed, settings.guidance_scale, settings.batch_size
    det = detectors or load_detectors(metrics, weights_dir or ev.weights_dir, device, c3d_weights)
    check_frames(metrics, int(cfg.data.num_frames), RUN_KEYS, det.frame_minima)  # before a clip is sampled

    real = dataset_source(cfg.data, split, num_videos, batch_size, _stats_dir(cfg), protocol, **split_note)
    if fake_batches is None:
        fake_batches = run_clip_batches(run_dir, settings, det.device)  # labelled, as the object metrics need
        if cfg.data.dataset == "embedded" and cfg.data.class_conditional and real.class_names \
                and "objects" not in metrics:
            metrics = metrics + ["objects"]
    info = {"source": "run", "run_dir": str(run_dir.resolve()), "model": cfg.model.name, "sampler": sampler,
            "steps": steps, "guidance_scale": guidance_scale, "seed": seed, "batch_size": batch_size}
    if settings.prompts is not None:
        info["prompts"] = f"{len(settings.prompts)} ({len(set(settings.prompts))} distinct), clip i from prompt i"
    if texts is not None:
        fake_batches = texts.scoring(fake_batches, settings)
    if not metrics:  # text metrics alone: no detector, no real statistics
        for _ in fake_batches:
            pass
        result = {"metrics": {}, "metric_names": [], "protocol": {"fake": info}}
    else:
        fake = ClipSource(fake_batches, info, desc=f"generated clips ({sampler}, {steps} steps)", num=num_videos,
                          what="the generated clips", class_names=real.class_names)
        result = evaluate(real, fake, metrics, det, out=None, progress=progress, start=start, protocol=protocol)
    if texts is not None:
        result["metrics"].update(texts.values(batch_size))
        result["metric_names"] = list(result["metrics"])
        result["protocol"]["clipsim"] = texts.protocol()
    from vfusion.evaluation.core import _finish
    from vfusion.rundir import write_result

    result = _finish(result, None, start)
    if out is None:
        run.write_metrics(result)
    else:
        write_result(out, result)
    return result


def evaluate_folders(real: str | Path, fake: str | Path, metrics: str | Sequence[str] = ("fvd", "kvd", "fid"),
                     num_videos: Optional[int] = None, num_frames: Optional[int] = None, real_stride: int = 1,
                     real_split: Optional[str] = None, overrides: Optional[list[str]] = None, batch_size: int = 8,
                     device: Optional[str] = None, weights_dir: Optional[str] = None,
                     c3d_weights: Optional[str] = None, out: Optional[str | Path] = None,
                     detectors: Optional[Detectors] = None, progress: bool = True,
                     protocol: Optional[str] = None) -> dict:
    """Metrics between a real source (a folder of videos, or a dataset config YAML) and a folder of fakes.

    Fakes: the per-video files under ``fake`` (``video_*`` files of a ``vfusion sample`` folder, else every
    video but ``grid.*`` / ``filmstrip.*``; the first ``num_videos`` when given), their first ``num_frames``
    frames (default: the shortest fake's length); clips of different sizes are refused before any
    feature is computed. A real folder's clips
    are the first ``num_frames`` frames at ``real_stride`` of each file, short-side
    resized and center cropped to the fakes' size; a config's real clips come from its
    dataset (``real_split`` or ``data.eval_split``) and are cached. ``protocol`` (default: the config's
    ``eval.protocol``, ``vfusion`` for a folder) ``stylegan_v``: a config's real clips are the preset's;
    a real folder's files are sorted by name, those with fewer than ``num_frames * real_stride``
    frames discarded, the first N of the rest read from a seeded random offset.
    """
    start = time.time()
    metrics = _no_text_metrics(expand_metrics(metrics, c3d_weights), "--real PATH --fake DIR")
    fake_files = fake_video_files(fake)
    if num_videos:
        if len(fake_files) < num_videos:
            raise UserError(f"{fake} holds {len(fake_files)} videos; --num-videos asks for {num_videos}")
        fake_files = fake_files[:num_videos]
    shortest, h, w = check_same_size(fake_files, num_frames)
    num_frames = int(num_frames or shortest)
    size = (h, w)
    det = detectors or load_detectors(metrics, weights_dir, device, c3d_weights)
    check_frames(metrics, num_frames, CLI_KEYS, det.frame_minima)
    n = len(fake_files)

    real = Path(real)
    if real.suffix.lower() in (".yaml", ".yml"):
        cfg = load_real_config(real, overrides=overrides)
        protocol = check_protocol(protocol or cfg.eval.get("protocol"))
        split, split_note = _split_for(cfg, protocol, real_split)
        if cfg.data.num_frames != num_frames:
            raise UserError(f"{real} has data.num_frames={cfg.data.num_frames} but the fake clips are evaluated "
                            f"with {num_frames} frames; pass --set data.num_frames={num_frames} or --num-frames")
        real_src = dataset_source(cfg.data, split, n, batch_size, _stats_dir(cfg), protocol,
                                  config=str(real.resolve()), **split_note)
    else:
        protocol = check_protocol(protocol)
        real_src = _folder_source(real, n, num_frames, real_stride, size, batch_size, protocol)
    fake_src = ClipSource(folder_batches(fake_files, num_frames, 1, None, batch_size),
                          {"source": "folder", "path": str(Path(fake).resolve()), "clip": f"first {num_frames} frames"},
                          desc="fake clips", num=n, what=f"the clips of {fake}")
    return evaluate(real_src, fake_src, metrics, det, out=out, progress=progress, start=start, protocol=protocol,
                    keys=CLI_KEYS)


def _no_text_metrics(metrics: list[str], mode: str) -> list[str]:
    text = [m for m in metrics if m in TEXT_METRICS]
    if text:
        raise UserError(f"{', '.join(text)} scores generated clips against the prompts they were made from: evaluate "
                        f"a run (--run RUN_DIR), not {mode}")
    return metrics


def _folder_source(real: Path, n: int, num_frames: int, stride: int, size: tuple[int, int], batch_size: int,
                   protocol: str) -> ClipSource:
    """Real clips from a folder of videos: the first ``n`` files from their first frame, or the stylegan_v
    preset's files and offsets."""
    files = video_files(real)
    info: dict = {"source": "folder", "path": str(real.resolve()), "frame_stride": stride, "protocol": protocol}
    crop = f"short side resized + center crop to {size[0]}x{size[1]}"
    if protocol == "stylegan_v":
        lengths = [clip_shape(f)[0] for f in files]
        files, starts, short = stylegan_v_folder(files, n, num_frames, stride, lengths)
        if not files:
            raise UserError(f"no video under {real} has the {min_length(num_frames, stride)} frames "
                            f"({num_frames} frames x stride {stride}) eval.protocol=stylegan_v asks for")
        info.update(selection=SGV_SELECTION, min_frames=min_length(num_frames, stride), num_discarded_short=short,
                    clip=f"{num_frames} frames from a seeded random offset, {crop}")
    else:
        files, starts = files[:n], None
        info["clip"] = f"first {num_frames} frames, {crop}"
    return ClipSource(folder_batches(files, num_frames, stride, size, batch_size, starts=starts), info,
                      desc="real clips", num=len(files))


def real_vs_real(cfg, num_videos: Optional[int] = None, metrics: str | Sequence[str] = ("fvd", "kvd"),
                 split: Optional[str] = None, batch_size: Optional[int] = None, device: Optional[str] = None,
                 weights_dir: Optional[str] = None, out: Optional[str | Path] = None,
                 detectors: Optional[Detectors] = None, progress: bool = True,
                 protocol: Optional[str] = None) -> dict:
    """The metric between two disjoint halves of the real clips (its floor for this N).

    Each half holds ``num_videos`` clips (default ``eval.num_videos``), or half of the
    split when it is smaller; the name carries the per-half N actually used. ``protocol``
    (default ``eval.protocol``): under ``vfusion`` the halves are two disjoint parts of a
    seeded permutation; under ``stylegan_v`` half A is the first n videos the preset selects
    (its real set) and half B the next n, in the same sorted order.
    """
    start = time.time()
    metrics = _no_text_metrics(expand_metrics(metrics), "real-vs-real")
    if {"is_k400_i3d", "is_ucf_c3d"} & set(metrics):
        raise UserError("real-vs-real compares two sets: use fvd, kvd or fid (IS is a property of one set)")
    num_videos = int(num_videos or cfg.eval.num_videos)
    protocol = check_protocol(protocol or cfg.eval.get("protocol"))
    split, split_note = _split_for(cfg, protocol, split)
    batch_size = int(batch_size or cfg.eval.batch_size)
    det = detectors or load_detectors(metrics, weights_dir or cfg.eval.weights_dir, device)
    check_frames(metrics, int(cfg.data.num_frames), CONFIG_KEYS, det.frame_minima)
    workers = default_num_workers(cfg.data)
    if protocol == "stylegan_v":
        sel = stylegan_v_selection(cfg.data, split, 2 * num_videos)
        dataset = sel.dataset
        if len(dataset) < 2:
            raise UserError(f"the {cfg.data.dataset} '{split}' split has {len(dataset)} video(s) long enough for "
                            f"eval.protocol=stylegan_v; not enough to evaluate")
        n = min(num_videos, len(dataset) // 2)
        idx_a, idx_b = list(range(n)), list(range(n, 2 * n))
        info = dict(_real_info(cfg.data, split, protocol), source="dataset", num_available=sel.num_kept,
                    **selection_info(sel, int(cfg.data.num_frames), int(cfg.data.frame_stride)),
                    halves="A: the first n selected videos (the preset's real set), B: the next n", **split_note)
    else:
        dataset, (idx_a, idx_b) = dataset_subsets(cfg.data, split, [num_videos, num_videos])
        n = min(len(idx_a), len(idx_b))
        info = dict(_real_info(cfg.data, split, protocol), source="dataset", num_available=len(dataset),
                    halves="two disjoint subsets of a seeded permutation (A: first n, B: next n)", **split_note)
    names = getattr(dataset, "class_names", None)
    if protocol != "stylegan_v" and n == num_videos:
        # half A is the evaluation's own real set (the first n of the same permutation): its statistics
        # come from (or go into) the same cache, so the floor reads only half B's clips
        half_a = dataset_source(cfg.data, split, n, batch_size, _stats_dir(cfg), protocol, subset=(dataset, idx_a[:n]),
                                desc=f"real half A ({split})")
        half_a.info.update(info)
    else:
        half_a = ClipSource(dataset_batches(dataset, idx_a[:n], batch_size, workers, with_labels=True), info,
                            desc=f"real half A ({split})", num=n, class_names=names)
    half_b = ClipSource(dataset_batches(dataset, idx_b[:n], batch_size, workers, with_labels=True),
                        {"source": "real half B"}, desc=f"real half B ({split})", num=n,
                        what="the clips of real half B", class_names=names)
    return evaluate(half_a, half_b, metrics, det, out=out, kind="real_vs_real", progress=progress, start=start,
                    protocol=protocol, keys=CONFIG_KEYS)


def available_real_clips(cfg, split: str, protocol: str) -> int:
    """How many real clips the protocol can draw from the split (lists the videos; decodes none)."""
    if protocol == "stylegan_v":
        return stylegan_v_selection(cfg.data, split).num_kept
    dataset, _ = dataset_subsets(cfg.data, split, [])
    return len(dataset)


def preflight(cfg, floor: bool = True) -> None:
    """Refuse, before any training, a run whose evaluation (``eval.*``) and floor could not be computed:
    too few clips or frames for a metric, or an evaluation split smaller than ``eval.num_videos``."""
    metrics = [m for m in expand_metrics(list(cfg.eval.metrics), cfg.eval.get("c3d_weights")) if m not in TEXT_METRICS]
    n = int(cfg.eval.num_videos)
    check_frames(metrics, int(cfg.data.num_frames))
    check_counts(metrics, None, n, int(cfg.data.num_frames))
    protocol = check_protocol(cfg.eval.get("protocol"))
    split, _ = _split_for(cfg, protocol, cfg.eval.get("real_split"))
    where = f"the '{split}' split of {cfg.data.dataset}" + (" (as eval.protocol=stylegan_v selects it)"
                                                            if protocol == "stylegan_v" else "")
    check_split(metrics, n, available_real_clips(cfg, split, protocol), where, floor and bool(floor_metrics(metrics)))
