"""Running a study: stage 1 once (per seed), then train -> sample -> evaluate every run.

Each run directory (``<study_dir>/runs/<run_id>``) is an ordinary vfusion run plus a ``status.json``::

    {"run_id": ..., "seed": 0, "labels": {...}, "state": "pending|training|sampling|
     evaluating|done|failed|interrupted", "phases": {"train": {"done", "seconds",
     "sessions", "global_step", "mean_step_s"}, "sample": {...}, "evaluate": {...}}, ...}

A run whose state is ``done`` is skipped; any other run continues with its first unfinished phase, training
resuming from ``checkpoints/last.ckpt`` when there is one (a wall-clock budget resumes too: Lightning's timer state
is in the checkpoint). A run directory whose ``config.yaml`` disagrees with what the study file asks for is an
error, never silently reused. Stage 1 (``<study_dir>/stage1[_s<seed>]``) has the same bookkeeping.
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import DictConfig, OmegaConf

from vfusion.config import to_dict
from vfusion.diffusion.priors import describe
from vfusion.experiment import Experiment
from vfusion.rundir import REAL_VS_REAL_FILE, RunDir, save_config
from vfusion.studies.spec import RunPlan, Study, StudyError, plan_study, stage1_config, stage1_dir
from vfusion.utils.io import atomic_write_json

# keys that may differ between the saved and the planned config of a run (paths, workers, UI)
VOLATILE_KEYS = ("run_dir", "data.root", "data.cache_dir", "data.splits_dir", "data.num_workers",
                 "train.progress_bar", "eval.weights_dir", "eval.real_stats_dir")
PHASES = ("train", "sample", "evaluate")


@dataclass
class StudyHooks:
    """What the harness calls; every field left None gets the real implementation.

    fit(experiment, stage=, resume=, train_loader=, spec_info=) -> run_dir   (vfusion.training.runner.fit)
    write_samples(run_dir, out_dir, settings)                        (inference.generate.write_run_samples)
    evaluate(run_dir, experiment) -> dict with "metrics"             (evaluation.evaluate_run)
    real_vs_real(cfg) -> dict with "metrics"
    train_loader_factory(cfg, stage) -> DataLoader  (None: the dataset named by cfg.data)

    ``experiment`` is the run's :class:`~vfusion.experiment.Experiment`, resolved once per run.
    spec_info: the data facts fit() would otherwise read from the dataset
    """

    fit: Optional[Callable] = None
    write_samples: Optional[Callable] = None
    evaluate: Optional[Callable[[Path, DictConfig], dict]] = None
    real_vs_real: Optional[Callable[[DictConfig], dict]] = None
    train_loader_factory: Optional[Callable[[DictConfig, str], Any]] = None
    spec_info: Optional[dict] = None

    def resolved(self) -> "StudyHooks":
        from vfusion.inference.generate import write_run_samples
        from vfusion.training.runner import fit

        return StudyHooks(fit=self.fit or fit, write_samples=self.write_samples or write_run_samples,
                          evaluate=self.evaluate or _evaluate_run, real_vs_real=self.real_vs_real or _real_vs_real,
                          train_loader_factory=self.train_loader_factory, spec_info=self.spec_info)


def _evaluate_run(run_dir: Path, experiment) -> dict:
    from vfusion.evaluation.evaluate import evaluate_run  # heavy: detectors

    cfg = experiment.config
    return evaluate_run(run_dir, metrics=tuple(cfg.eval.metrics), num_videos=cfg.eval.num_videos,
                        real_split=cfg.eval.real_split or cfg.data.eval_split, weights_dir=cfg.eval.weights_dir,
                        experiment=experiment)


def _real_vs_real(cfg: DictConfig) -> dict:
    from vfusion.evaluation.evaluate import real_vs_real
    from vfusion.evaluation.limits import floor_metrics

    metrics = floor_metrics(cfg.eval.metrics)
    return real_vs_real(cfg, num_videos=cfg.eval.num_videos, metrics=metrics, weights_dir=cfg.eval.weights_dir)


# --------------------------------------------------------------------------- status files

def now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def read_status(run_dir: Path) -> Optional[dict]:
    return RunDir(run_dir).read_status()


def new_status(run_id: str, seed: int, labels: dict, phases=PHASES) -> dict:
    return {"run_id": run_id, "seed": seed, "labels": labels, "state": "pending", "created": now(), "updated": now(),
            "error": None, "phases": {p: {"done": False, "seconds": 0.0, "sessions": 0} for p in phases}}


def write_status(run_dir: Path, status: dict, state: Optional[str] = None) -> None:
    if state is not None:
        status["state"] = state
    status["updated"] = now()
    RunDir(run_dir).write_status(status)


# --------------------------------------------------------------------------- config consistency

def _flat(d: Any, prefix: str = "") -> dict:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


# keys a run resolves from its base folder when the study leaves them unset (null)
ADOPTED_PREFIXES = ("diffusion.", "data.vae_path")


def config_differences(saved: DictConfig, planned: DictConfig) -> list[str]:
    """The keys whose values differ. An adopted key the plan leaves unset matches whatever the run resolved:
    a run carried to a machine without its stage-1 base cannot resolve it again, and unset means 'the base's'."""
    a, b = _flat(to_dict(saved)), _flat(to_dict(planned))
    diffs = []
    for k in sorted(set(a) | set(b)):
        if k in VOLATILE_KEYS or (b.get(k) is None and k.startswith(ADOPTED_PREFIXES)):
            continue
        if a.get(k) != b.get(k):
            diffs.append(f"{k}: {a.get(k)!r} (saved) vs {b.get(k)!r} (study)")
    return diffs


POST_TRAINING = ("sample.", "eval.")  # settings of the phases after training


def as_recorded(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """The planned config as training records it in ``run_dir``: the noise process and VAE resolved against
    the base folder (:func:`vfusion.backbones.adopt.adopt_backbone`; as planned when that folder is gone),
    the paths as :func:`vfusion.runpaths.recorded_config` writes them."""
    from vfusion.errors import UserError
    from vfusion.experiment import adopted_config
    from vfusion.runpaths import recorded_config

    try:
        cfg = adopted_config(cfg)
    except UserError:
        pass
    return recorded_config(cfg, run_dir)


def check_existing_config(run_dir: Path, cfg: DictConfig, what: str) -> list[str]:
    """An existing run directory must have been trained with the same config (up to
    VOLATILE_KEYS). Returns the differences in ``sample.*`` / ``eval.*`` only, which
    :func:`refresh_post_training` applies (samples/metrics redone, training kept)."""
    run = RunDir(run_dir)
    if not run.config_path.is_file():
        return []
    saved, planned = as_recorded(run.config(), run_dir), as_recorded(cfg, run_dir)
    own, wanted = saved.model.base.pretrained, planned.model.base.pretrained
    if own and Path(own).name == run.base_dir.name and not run.base_dir.exists() and wanted \
            and not Path(wanted).exists():
        # a run carried without its weights (experiments/study_carry.py): neither its copy of the stage-1
        # base nor the study's stage-1 folder is here to compare
        planned.model.base.pretrained = own
    diffs = config_differences(saved, planned)
    training = [d for d in diffs if not d.startswith(POST_TRAINING)]
    if training:
        raise StudyError(f"{what} '{run_dir}' was trained with another config ({'; '.join(training[:4])}"
                         f"{' ...' if len(training) > 4 else ''}); the study file changed since. Delete that "
                         "directory to redo the run, or restore the study file")
    return diffs


def refresh_post_training(run_dir: Path, cfg: DictConfig, diffs: list[str]) -> None:
    """New sample/eval settings for a trained run: rewrite its config.yaml (sampling and
    evaluation read them from there) and mark the affected phases as not done."""
    status = read_status(run_dir)
    save_config(as_recorded(cfg, run_dir), RunDir(run_dir).config_path)
    if status is None:
        return
    redo = ["evaluate"] + (["sample"] if any(d.startswith("sample.") for d in diffs) else [])
    for phase in redo:
        status["phases"].setdefault(phase, {"done": False, "seconds": 0.0, "sessions": 0})["done"] = False
    status["note"] = f"{now()}: sample/eval settings changed ({'; '.join(diffs[:3])}); redoing {', '.join(redo)}"
    write_status(run_dir, status, "pending" if status.get("state") == "done" else None)


# --------------------------------------------------------------------------- one phase at a time

class _Phase:
    """Times one phase, accumulating its seconds and marking state/failures in status.json."""

    def __init__(self, run_dir: Path, status: dict, phase: str, state: str):
        self.run_dir, self.status, self.phase, self.state = run_dir, status, phase, state

    def __enter__(self):
        self.t0 = time.perf_counter()
        entry = self.status["phases"][self.phase]
        entry["sessions"] = int(entry.get("sessions", 0)) + 1
        self.status["error"] = None
        self.status.pop("traceback", None)
        write_status(self.run_dir, self.status, self.state)
        return entry

    def __exit__(self, exc_type, exc, tb):
        entry = self.status["phases"][self.phase]
        entry["seconds"] = float(entry.get("seconds", 0.0)) + time.perf_counter() - self.t0
        if exc_type is None:
            entry["done"] = True
            write_status(self.run_dir, self.status)
        elif issubclass(exc_type, Exception):
            self.status["error"] = f"{self.phase}: {exc_type.__name__}: {exc}"
            self.status["traceback"] = "".join(traceback.format_exception(exc_type, exc, tb)[-6:])
            write_status(self.run_dir, self.status, "failed")
        else:  # KeyboardInterrupt / SystemExit (Lightning turns Ctrl+C into SystemExit)
            write_status(self.run_dir, self.status, "interrupted")
        return False


def _fit(hooks: StudyHooks, experiment, stage: str):
    from vfusion.training.runner import last_checkpoint

    cfg = experiment.config
    loader = hooks.train_loader_factory(cfg, stage) if hooks.train_loader_factory else None
    resume = last_checkpoint(Path(cfg.run_dir)) is not None
    return hooks.fit(experiment, stage=stage, resume=resume, train_loader=loader, spec_info=hooks.spec_info)


def _model_info(run_dir: Path) -> dict:
    return RunDir(run_dir).read_model_info() or {}


def ensure_stage1(study: Study, seed: int, hooks: StudyHooks, echo: Callable[[str], None]) -> Path:
    """Train (or resume, or reuse) the stage-1 base UNet that runs of ``seed`` load."""
    cfg = stage1_config(study, seed)
    d = stage1_dir(study, seed)
    unet_dir = d / cfg.pretrain.output_subdir
    check_existing_config(d, cfg, "stage-1 directory")  # sample/eval differences do not matter here
    status = read_status(d)
    if status and status.get("state") == "done" and (unet_dir / "config.json").is_file():
        return unet_dir
    status = status or new_status(d.name, int(cfg.seed), {}, phases=("train",))
    status["phases"]["train"]["done"] = False
    echo(f"[stage 1] pretraining the base UNet on single frames -> {unet_dir}")
    d.mkdir(parents=True, exist_ok=True)
    with _Phase(d, status, "train", "training") as entry:
        _fit(hooks, Experiment.from_config(cfg), "pretrain")
        info = _model_info(d)
        entry["global_step"] = info.get("global_step")
    if not (unet_dir / "config.json").is_file():
        raise StudyError(f"stage 1 finished but '{unet_dir}' holds no diffusers UNet (config.json)")
    write_status(d, status, "done")
    return unet_dir


def run_one(study: Study, plan: RunPlan, cfg: DictConfig, hooks: StudyHooks, echo: Callable[[str], None]) -> dict:
    """Train, sample and evaluate one run, each phase skipped when already done. Its
    :class:`~vfusion.experiment.Experiment` is resolved here, once stage 1 has written the base it adopts."""
    d = plan.run_dir
    exp = Experiment.from_config(cfg)
    cfg = exp.config
    run = RunDir(d)
    status = read_status(d) or new_status(plan.run_id, plan.seed, plan.labels)
    for p in PHASES:  # status files of older versions / hand edits
        status["phases"].setdefault(p, {"done": False, "seconds": 0.0, "sessions": 0})
    d.mkdir(parents=True, exist_ok=True)
    if plan.flops is not None:  # a FLOPs budget: what one step costs and how many steps it buys
        status["flops"] = dict(plan.flops)
    if not status["phases"]["train"]["done"]:
        resumed = run.last_checkpoint is not None
        start = "resuming" if resumed else ("new run, base UNet from stage 1" if plan.stage1_dir is not None
                                            else "new run")
        echo(f"[{plan.run_id}] training {cfg.model.name} ({start})")
        with _Phase(d, status, "train", "training") as entry:
            _fit(hooks, exp, "video")
            info = _model_info(d)
            entry["global_step"] = info.get("global_step")
            if info.get("mean_train_step_s") is not None:  # a resumed session may have run 0 steps
                entry["mean_step_s"] = info["mean_train_step_s"]
    if not status["phases"]["sample"]["done"]:
        # one sampling pass for the samples folder and the evaluation (which reuses the saved videos)
        n = max(int(cfg.sample.num_videos), int(cfg.eval.num_videos) if cfg.eval.metrics else 0)
        s = exp.sample_settings(for_eval=True, num_videos=n)
        echo(f"[{plan.run_id}] sampling {s.num_videos} videos ({s.sampler}, {s.steps} steps)")
        with _Phase(d, status, "sample", "sampling"):
            hooks.write_samples(d, run.samples_dir, s)
    if cfg.eval.metrics and not status["phases"]["evaluate"]["done"]:
        echo(f"[{plan.run_id}] evaluating {', '.join(cfg.eval.metrics)} on {cfg.eval.num_videos} videos")
        with _Phase(d, status, "evaluate", "evaluating"):
            hooks.evaluate(d, exp)
    write_status(d, status, "done")
    return status


def select(plans: list, only: Optional[list[str]]) -> list:
    if not only:
        return plans
    picked = [p for p in plans if any(fnmatch.fnmatch(p[0].run_id, pat) for pat in only)]
    if not picked:
        raise StudyError(f"--only {' '.join(only)} matches none of the runs ({', '.join(p[0].run_id for p in plans)})")
    return picked


def write_plan(study: Study, plans: list) -> None:
    """``study.json``: the study file as understood, and every run's overrides (for the record)."""
    atomic_write_json(study.study_dir / "study.json", {
        "name": study.name, "study_file": str(study.path), "base": str(study.base_path),
        "spec": OmegaConf.to_container(study.spec, resolve=True) | {"grid": {
            a: [{"label": v.label, "overrides": v.overrides} for v in vs] for a, vs in study.axes.items()}},
        "cli_overrides": study.cli_overrides,
        "runs": [{"run_id": p.run_id, "seed": p.seed, "labels": p.labels, "run_dir": str(p.run_dir),
                  "overrides": p.overrides, **({"flops": p.flops} if p.flops else {})} for p, _ in plans],
        "written": now(),
    })


def run_study(study: Study, hooks: Optional[StudyHooks] = None, only: Optional[list[str]] = None,
              keep_going: bool = False, echo: Callable[[str], None] = print) -> dict:
    """Run every unfinished run of the study, then write the results and plots (``hooks.spec_info``
    also serves a FLOPs budget's count, :func:`vfusion.studies.spec.plan_study`).

    Returns ``{"done": [...], "skipped": [...], "failed": {run_id: error}}``. Without
    ``keep_going`` the first failing run stops the study (after the report is written
    for what is finished) and its exception propagates.
    """
    hooks = (hooks or StudyHooks()).resolved()
    plans = plan_study(study, hooks.spec_info)
    selected = select(plans, only)
    refresh = {}
    for plan, cfg in selected:  # fail before touching anything when the study file changed under a run
        refresh[plan.run_id] = check_existing_config(plan.run_dir, cfg, "run directory")
        if plan.stage1_dir is not None:
            check_existing_config(plan.stage1_dir, stage1_config(study, plan.seed), "stage-1 directory")
    check_evaluations(study, selected)
    write_plan(study, plans)
    summary: dict = {"done": [], "skipped": [], "failed": {}}
    t0 = time.perf_counter()
    try:
        for i, (plan, cfg) in enumerate(selected):
            if refresh[plan.run_id]:
                echo(f"[{plan.run_id}] sample/eval settings changed: {'; '.join(refresh[plan.run_id][:3])}")
                refresh_post_training(plan.run_dir, cfg, refresh[plan.run_id])
            status = read_status(plan.run_dir)
            if status and status.get("state") == "done":
                summary["skipped"].append(plan.run_id)
                echo(f"[{plan.run_id}] done already, skipping")
                continue
            echo(f"--- run {i + 1}/{len(selected)}: {plan.run_id}")
            try:
                if plan.stage1_dir is not None:
                    ensure_stage1(study, plan.seed, hooks, echo)
                run_one(study, plan, cfg, hooks, echo)
                summary["done"].append(plan.run_id)
            except Exception as err:
                summary["failed"][plan.run_id] = f"{type(err).__name__}: {err}"
                st = read_status(plan.run_dir) or new_status(plan.run_id, plan.seed, plan.labels)
                if st.get("state") != "failed":  # failed outside a phase of its own (e.g. in stage 1)
                    st["error"] = f"{type(err).__name__}: {err}"
                    write_status(plan.run_dir, st, "failed")
                if not keep_going:
                    raise
                echo(f"[{plan.run_id}] FAILED: {type(err).__name__}: {err} (continuing: --keep-going)")
        if _wants_floor(study):
            ensure_real_vs_real(study, plans[0][1], hooks, echo)
    finally:
        summary["wall_s"] = time.perf_counter() - t0
        try:
            if not study.single:  # a one-cell study's report is the run's own files
                from vfusion.studies.report import write_report

                write_report(study, echo=echo)
        except Exception as err:  # never hide the run's own error behind a reporting one
            echo(f"could not write the study report: {type(err).__name__}: {err}")
    return summary


def _wants_floor(study: Study) -> bool:
    from vfusion.evaluation.limits import floor_metrics

    return bool(study.spec.eval.real_vs_real and floor_metrics(study.spec.eval.metrics))


def check_evaluations(study: Study, plans: list) -> None:
    """Refuse before any training what the evaluation could not compute (``evaluate.preflight``):
    once per distinct data and eval config, the floor with the first run's (the one it is computed on)."""
    from vfusion.evaluation.evaluate import preflight

    if not study.spec.eval.metrics:
        return
    seen = set()
    for i, (_plan, cfg) in enumerate(plans):
        key = OmegaConf.to_yaml(OmegaConf.create({"data": cfg.data, "eval": cfg.eval}))
        if key not in seen:
            seen.add(key)
            preflight(cfg, floor=i == 0 and _wants_floor(study))


def ensure_real_vs_real(study: Study, cfg: DictConfig, hooks: StudyHooks, echo) -> Optional[dict]:
    out = study.study_dir / REAL_VS_REAL_FILE
    if out.is_file():
        return json.loads(out.read_text())
    echo("[study] real-vs-real floor of the metrics")
    result = hooks.real_vs_real(cfg)
    atomic_write_json(out, result)
    return result


def dry_run_lines(study: Study, only: Optional[list[str]] = None) -> list[str]:
    """What ``vfusion study --dry-run`` prints: every (selected) run, its state, its overrides."""
    plans = select(plan_study(study), only)
    lines = [f"study '{study.name}': {len(plans)} runs ({' x '.join(f'{a}[{len(v)}]' for a, v in study.axes.items())}"
             f" x seeds{list(study.spec.seeds)}) in {study.study_dir}"]
    seen_s1 = set()
    for plan, cfg in plans:
        if plan.stage1_dir is not None and plan.stage1_dir not in seen_s1:
            seen_s1.add(plan.stage1_dir)
            s1 = stage1_config(study, plan.seed)
            lines.append(f"  stage 1 -> {plan.stage1_dir}  (pretrain.max_steps={s1.pretrain.max_steps}, "
                         f"max_minutes={s1.pretrain.max_minutes}, seed={s1.seed})")
        st = read_status(plan.run_dir)
        state = st.get("state", "?") if st else "new"
        flops = f" ({plan.flops['per_step']:.3e} FLOP/step, {plan.flops['total']:.3e} in all)" if plan.flops else ""
        lines.append(f"  {plan.run_id:<32} [{state}] model={cfg.model.name} noise={describe(cfg.noise)}"
                     f" budget: steps={cfg.train.max_steps}{flops} minutes={cfg.train.max_minutes or 'no cap'}")
        lines.append(f"      {' '.join(plan.variant_overrides) or '(no variant overrides)'}")
    return lines
