"""CLI: ``vfusion pretrain-base``, ``train``, ``sample`` and ``export``."""

from __future__ import annotations

import argparse

from vfusion.diffusion.samplers import sampler_names


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
    p.add_argument("--sampler", choices=sampler_names(), default=None)
    p.add_argument("--seed", type=int, default=None, help="batch i uses seed + i (default: sample.seed)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    p.add_argument("--prompt", default=None,
                   help="text for every video (only when the base model is text-conditioned; default: each class's "
                        "prompt from the run's template)")
    p.add_argument("--prompts", default=None, metavar="FILE",
                   help="a text file of prompts, one per line: video i gets prompt i mod P (default --num-videos: P)")
    p.add_argument("--negative-prompt", default=None,
                   help="what classifier-free guidance steers away from (default: the empty prompt; acts with "
                        "--guidance > 1)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--out", default=None, help="output folder (default: RUN/samples)")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_sample, on_interrupt="no videos were written: the output folder is as it was")

    p = sub.add_parser("export", help="write a run's pipeline (EMA weights, safetensors) from a checkpoint")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--checkpoint", default=None, help="a checkpoint of the run (default: checkpoints/last.ckpt)")
    p.add_argument("--out", default=None, help="output folder (default: RUN/pipeline)")
    p.set_defaults(func=cmd_export)



def _config_args(p: argparse.ArgumentParser, resume: bool = True) -> None:
    p.add_argument("--config", help="experiment YAML (e.g. configs/embedded.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.max_steps=200")
    if resume:
        p.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN_DIR",
                       help="continue from checkpoints/last.ckpt (of RUN_DIR, or of the config's run dir)")


def _load(args):
    from vfusion.errors import UserError
    from vfusion.experiment import load_experiment_config
    from vfusion.training.runner import resume_config

    if isinstance(args.resume, str):
        return resume_config(args.resume, args.overrides), True
    if not args.config:
        raise UserError("pass --config CONFIG.yaml (or --resume RUN_DIR)")
    return load_experiment_config(args.config, args.overrides), bool(args.resume)


def cmd_pretrain(args) -> int:
    from vfusion.training.runner import fit

    cfg, resume = _load(args)
    run_dir = fit(cfg, stage="pretrain", resume=resume)
    print(f"base UNet (diffusers format): {run_dir / cfg.pretrain.output_subdir}")
    print(f"use it with: vfusion train --config CFG model.base.pretrained={run_dir / cfg.pretrain.output_subdir}")
    return 0


def cmd_train(args) -> int:
    from vfusion.rundir import RunDir
    from vfusion.training.runner import fit

    cfg, resume = _load(args)
    run_dir = fit(cfg, stage="video", resume=resume)
    print(f"run directory: {run_dir}  (TensorBoard: tensorboard --logdir {RunDir(run_dir).tb_dir})")
    return 0


def cmd_sample(args) -> int:
    from vfusion.errors import UserError
    from vfusion.inference.generate import load_pipeline, write_samples
    from vfusion.rundir import RunDir, resolve_sample_settings

    if bool(args.run) == bool(args.pipeline):
        raise UserError("pass --run RUN_DIR or --pipeline DIR (one of them)")
    prompts = read_prompts(args.prompts) if args.prompts else None
    choices = dict(num_videos=args.num_videos if args.num_videos is not None or prompts is None else len(prompts),
                   sampler=args.sampler, steps=args.steps, guidance_scale=args.guidance, seed=args.seed,
                   batch_size=args.batch_size, prompt=args.prompt, prompts=prompts,
                   negative_prompt=args.negative_prompt)
    if args.run:
        from vfusion.experiment import Experiment

        run = RunDir(args.run)
        exp = Experiment.of_run(run.path)
        settings = exp.sample_settings(**choices).check(exp.config.diffusion.num_train_timesteps)
        pipe = load_pipeline(run.path, args.device)
        out = args.out or str(run.samples_dir)
    else:
        if not args.out:
            raise UserError("--pipeline needs --out DIR (where the videos go)")
        pipe = load_pipeline(args.pipeline, args.device)
        settings = resolve_sample_settings(pipe.sample_defaults(), **choices)
        out = args.out
    settings.check(pipe.process.num_train_timesteps)
    if not pipe.text_conditioned and (settings.prompt or settings.prompts or settings.negative_prompt):
        raise UserError("this model's base is not text-conditioned, so it takes no --prompt, --prompts or "
                        "--negative-prompt")
    out_dir, secs, paths = write_samples(pipe, out, settings)
    print(f"wrote {len(paths)} videos, videos.npy, grid.gif and filmstrip.png to {out_dir} in {secs:.1f}s")
    return 0


def read_prompts(path: str) -> list[str]:
    """The prompts of a text file, one per line (blank lines skipped), or one clear error."""
    from pathlib import Path

    from vfusion.errors import UserError

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read the prompts file {path} ({type(err).__name__}); give a UTF-8 text file with "
                        f"one prompt per line") from err
    prompts = [" ".join(line.split()) for line in lines if line.strip()]
    if not prompts:
        raise UserError(f"the prompts file {path} holds no prompt; write one prompt per line")
    return prompts


def cmd_export(args) -> int:
    from pathlib import Path

    from vfusion.rundir import RunDir
    from vfusion.training.runner import export_pipeline, module_from_checkpoint

    run = RunDir(args.run)
    module = module_from_checkpoint(run.path, args.checkpoint)
    out = Path(args.out) if args.out else run.pipeline_dir
    cfg = run.config()
    export_pipeline(module, out, use_ema=bool(cfg.sample.use_ema), metrics=run.read_metrics())
    print(f"wrote the pipeline of {run.path} (step {module.video_config['trained']['global_step']}) to {out}")
    return 0
