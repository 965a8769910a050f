"""CLI: ``vfusion study --config configs/studies/NAME.yaml [key=value ...]``."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("study", help="run a grid of experiments (train, sample, evaluate) and tabulate/plot them",
                       description="Runs every run of a study file that is not done yet (interrupted runs resume "
                                   "from their last checkpoint), then writes results.csv, results.md and plots/ "
                                   "in the study directory (default runs/studies/<name>).")
    p.add_argument("--config", required=True, help="study YAML (e.g. configs/studies/lambda_sweep_embedded.yaml)")
    p.add_argument("overrides", nargs="*",
                   help="key=value overrides applied to every run, e.g. train.accelerator=gpu")
    p.add_argument("--study-dir", default=None, help="where the study lives (default: study_dir of the file, "
                                                      "else runs/studies/<name>)")
    p.add_argument("--dry-run", action="store_true", help="list the runs with their state and overrides; run nothing")
    p.add_argument("--report-only", action="store_true",
                   help="only (re)write results.csv, results.md and plots from what is on disk")
    p.add_argument("--only", action="append", metavar="PATTERN", default=None,
                   help="only the runs whose id matches this shell pattern (e.g. 'c0.5_*'); repeatable")
    p.add_argument("--keep-going", action="store_true", help="record a failing run and continue with the next")
    p.set_defaults(func=cmd_study)


def cmd_study(args) -> int:
    from vfusion.errors import UserError
    from vfusion.studies.harness import dry_run_lines, run_study
    from vfusion.studies.report import write_report
    from vfusion.studies.spec import load_study

    study = load_study(args.config, args.overrides, study_dir=args.study_dir)
    if args.dry_run:
        print("\n".join(dry_run_lines(study, args.only)))
        return 0
    if args.report_only:
        write_report(study)
        return 0
    summary = run_study(study, only=args.only, keep_going=args.keep_going)
    print(f"study '{study.name}': {len(summary['done'])} run(s) finished, {len(summary['skipped'])} already done, "
          f"{len(summary['failed'])} failed, {summary['wall_s'] / 60:.1f} min")
    if summary["failed"]:
        for run_id, err in summary["failed"].items():
            print(f"  FAILED {run_id}: {err}")
        raise UserError(f"{len(summary['failed'])} run(s) failed; fix the cause and rerun the same command "
                        "(finished runs are skipped, failed ones resume)")
    return 0
