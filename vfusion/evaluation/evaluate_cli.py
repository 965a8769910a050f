"""CLI: ``vfusion evaluate`` (three modes; their entry points live in ``evaluate.py``).

    vfusion evaluate --run RUN_DIR [--metrics fvd,kvd,fid,is,flicker,drift,motion] [--num-videos N]
                     [--real-split test] [--sampler ddim --steps 50 --seed 0 --guidance 1.0]
    vfusion evaluate --real PATH --fake DIR [--metrics fvd,kvd,fid] [--out FILE]
    vfusion evaluate --real-vs-real --config CFG [--num-videos N] [KEY=VALUE ...]

``--real`` is a folder of videos or a dataset config YAML (``--real-config CFG`` is the same as ``--real CFG``).
One ``name<TAB>value`` line per metric goes to stdout; the JSON with the full protocol to ``--out`` (defaults:
``RUN_DIR/metrics.json``, ``DIR/metrics.json``, ``<run dir of CFG>/real_vs_real.json``). ``--protocol
vfusion|stylegan_v`` (or ``eval.protocol=...``) chooses the real clips: ``vfusion`` a seeded subset of the
evaluation split, ``stylegan_v`` StyleGAN-V's selection (``protocols.py``), whose metric names end with ``_sgv``.
"""

from __future__ import annotations

import argparse
import sys

DEFAULT_METRICS = {"run": "fvd,kvd,fid,is", "folders": "fvd,kvd,fid", "real_vs_real": "fvd,kvd"}

HELP = """Score generated videos against real ones, in one of three modes:

  vfusion evaluate --run RUN_DIR [--metrics fvd,kvd,fid,is,flicker,drift,motion] [--num-videos N]
                   [--real-split test] [--sampler ddim --steps 50 --seed 0 --guidance 1.0]
  vfusion evaluate --real PATH --fake DIR [--metrics fvd,kvd,fid] [--out FILE]
  vfusion evaluate --real-vs-real --config CFG [--num-videos N] [KEY=VALUE ...]

--run samples the run's pipeline and compares with its dataset's real clips. --real is a folder
of videos or a dataset config YAML (--real-config CFG is the same as --real CFG); --fake reads
only the per-video files of a folder (video_* of a samples folder), never grid or filmstrip
previews. --real-vs-real compares two disjoint halves of the real clips: the floor of the metric.

Each metric is printed as one "name<TAB>value" line; the JSON with the full protocol goes to
--out (default RUN_DIR/metrics.json, DIR/metrics.json, or <run dir of CFG>/real_vs_real.json).

--protocol vfusion|stylegan_v (or eval.protocol=... on a config) chooses the real clips: vfusion
a seeded subset of the evaluation split; stylegan_v StyleGAN-V's first N videos in sorted order
at random offsets (UCF-101 train + test, other datasets train), with metric names ending in _sgv.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="FVD / KVD / FID / IS of a run, of two folders, or real-vs-real",
        description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_argument_group("what to evaluate (one mode)")
    mode.add_argument("--run", metavar="RUN_DIR", help="a training run: sample --num-videos clips and evaluate them")
    mode.add_argument("--real", metavar="PATH", help="real clips: a folder of videos or a dataset config YAML")
    mode.add_argument("--real-config", metavar="CFG", help="same as --real CFG")
    mode.add_argument("--fake", metavar="DIR", help="a folder of generated videos (with --real)")
    mode.add_argument("--real-vs-real", action="store_true",
                      help="two disjoint halves of the real data (with --config)")
    mode.add_argument("--config", metavar="CFG", help="experiment config YAML (with --real-vs-real)")
    p.add_argument("--metrics", help="comma-separated: fvd,kvd,fid,is (is = is_k400_i3d, plus is_ucf_c3d with "
                                     "--c3d-weights), is_k400_i3d, is_ucf_c3d, flicker, drift, motion (optical "
                                     "flow, with motion_ratio), objects (the embedded dataset's objects; needs "
                                     "labelled clips), clipsim (--run of a text-conditioned model, with "
                                     "--clip-model); the pixel statistics and clipsim come next to their real "
                                     "value, _real")
    from vfusion.evaluation.protocols import PROTOCOLS

    p.add_argument("--protocol", choices=PROTOCOLS,
                   help="which real clips: default eval.protocol of the run / config (vfusion for a real folder)")
    p.add_argument("--num-videos", type=int, help="N generated clips (and N real); default eval.num_videos")
    from vfusion.data.registry import SPLITS

    p.add_argument("--real-split", choices=SPLITS, help="real split; default data.eval_split")
    from vfusion.diffusion.samplers import sampler_names

    p.add_argument("--sampler", choices=sampler_names(), help="--run: default sample.sampler")
    p.add_argument("--steps", type=int, help="--run: sampling steps; default sample.steps")
    p.add_argument("--seed", type=int, help="--run: sampling seed; default eval.seed")
    p.add_argument("--guidance", type=float,
                   help="--run: classifier-free guidance scale; default sample.guidance_scale")
    p.add_argument("--num-frames", type=int, help="--fake: frames per clip (default: all frames of the first fake)")
    p.add_argument("--real-stride", type=int, default=1, help="--real FOLDER: frame stride of the real clips")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the --real/--config YAML (repeatable), e.g. data.num_workers=0")
    p.add_argument("more_overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides of the --real/--config YAML, the same as --set, e.g. eval.protocol=stylegan_v")
    p.add_argument("--batch-size", type=int, help="clips per detector batch; default eval.batch_size (8)")
    p.add_argument("--device", help="cuda / cpu (default: cuda when available)")
    p.add_argument("--weights-dir", help="detector weights folder (default: $VFUSION_WEIGHTS_DIR or the user cache)")
    p.add_argument("--c3d-weights", metavar="FILE", help="C3D fine-tuned on UCF-101 (enables is_ucf_c3d)")
    p.add_argument("--clip-model", metavar="DIR",
                   help="--run: a transformers CLIP folder for clipsim (default eval.clip_model)")
    p.add_argument("--out", metavar="FILE", help="where the JSON goes (see the defaults above)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run, on_interrupt="no metrics were written: the metrics file is as it was")


def _mode(args) -> str:
    from vfusion.errors import UserError

    real = args.real or args.real_config
    if args.real and args.real_config:
        raise UserError("give --real or --real-config, not both")
    modes = [m for m, on in (("run", bool(args.run)), ("folders", bool(real or args.fake)),
                             ("real_vs_real", args.real_vs_real)) if on]
    if len(modes) != 1:
        raise UserError("choose one mode: --run RUN_DIR | --real PATH --fake DIR | --real-vs-real --config CFG")
    if modes[0] == "folders" and not (real and args.fake):
        raise UserError("--real PATH and --fake DIR go together")
    if modes[0] == "real_vs_real" and not args.config:
        raise UserError("--real-vs-real needs --config CFG (the dataset to split)")
    if args.config and modes[0] != "real_vs_real":
        raise UserError("--config is for --real-vs-real; use --real CFG to take real clips from a config")
    return modes[0]


def _overrides(args, mode: str) -> list[str]:
    """``--set`` and trailing ``KEY=VALUE`` overrides: only where a config YAML is read."""
    from vfusion.errors import UserError

    overrides = list(args.overrides) + list(args.more_overrides)
    reads_config = mode == "real_vs_real" or (mode == "folders" and str(args.real or args.real_config).lower()
                                              .endswith((".yaml", ".yml")))
    if overrides and not reads_config:
        raise UserError(f"overrides ({' '.join(overrides)}) apply to a config YAML (--config or --real CFG); "
                        "a run is evaluated with its saved config (use --protocol, --real-split, ...)")
    return overrides


def _check_split_choice(args, protocol: str, dataset: str) -> None:
    """``--real-split`` that the stylegan_v preset would not read is a mistake, not ignored."""
    from vfusion.errors import UserError
    from vfusion.evaluation.protocols import real_split

    if args.real_split and protocol == "stylegan_v" and args.real_split != real_split(protocol, dataset, None, ""):
        raise UserError(f"--real-split {args.real_split}: eval.protocol=stylegan_v reads the "
                        f"'{real_split(protocol, dataset, None, '')}' split of {dataset}; drop --real-split or use "
                        "--protocol vfusion")


def _check_counts(args) -> None:
    """Counts of 0 or less are mistakes, never "use the default" (checked before any work)."""
    from vfusion.errors import UserError

    for name in ("num_videos", "steps", "batch_size", "num_frames", "real_stride"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise UserError(f"--{name.replace('_', '-')} {v}: expected a count of at least 1")
    if args.guidance is not None and args.guidance < 0:
        raise UserError(f"--guidance {args.guidance} is negative; use 1 for no guidance, > 1 to strengthen it")


def run(args) -> int:
    from pathlib import Path

    from vfusion.evaluation import evaluate as E
    from vfusion.rundir import METRICS_FILE, RunDir

    mode = _mode(args)
    _check_counts(args)
    overrides = _overrides(args, mode)
    metrics = args.metrics or DEFAULT_METRICS[mode]
    progress = not args.no_progress
    common = dict(metrics=metrics, num_videos=args.num_videos, device=args.device, weights_dir=args.weights_dir,
                  progress=progress)
    if mode == "run":
        cfg = RunDir(args.run).config()
        _check_split_choice(args, args.protocol or cfg.eval.get("protocol") or "vfusion", cfg.data.dataset)
        result = E.evaluate_run(args.run, real_split=args.real_split, sampler=args.sampler, steps=args.steps,
                                seed=args.seed, guidance_scale=args.guidance, batch_size=args.batch_size,
                                c3d_weights=args.c3d_weights, out=args.out, protocol=args.protocol,
                                clip_model=args.clip_model, **common)
        out = args.out or RunDir(args.run).metrics_path
    elif mode == "folders":
        real = args.real or args.real_config
        if args.real_split and str(real).lower().endswith((".yaml", ".yml")):
            from vfusion.evaluation.protocols import load_real_config

            cfg = load_real_config(real, overrides=overrides)
            _check_split_choice(args, args.protocol or cfg.eval.protocol, cfg.data.dataset)
        out = args.out or Path(args.fake) / METRICS_FILE
        result = E.evaluate_folders(real, args.fake, num_frames=args.num_frames,
                                    real_stride=args.real_stride, real_split=args.real_split,
                                    overrides=overrides, batch_size=args.batch_size or 8,
                                    c3d_weights=args.c3d_weights, out=out, protocol=args.protocol, **common)
    else:
        from vfusion.config import run_dir_of
        from vfusion.evaluation.protocols import load_real_config

        cfg = load_real_config(args.config, overrides=overrides)
        _check_split_choice(args, args.protocol or cfg.eval.protocol, cfg.data.dataset)
        out = args.out or RunDir(run_dir_of(cfg)).real_vs_real_path
        result = E.real_vs_real(cfg, split=args.real_split, batch_size=args.batch_size, out=out,
                                protocol=args.protocol, **common)
    for name, value in result["metrics"].items():
        print(f"{name}\t{value:.6g}")
    print(f"wrote {out}", file=sys.stderr)
    return 0
