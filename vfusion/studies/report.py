"""Study results: one row per run (``results.csv``), seeds pooled (``results.md``), plots.

A run's row holds the grid labels and the seed; what the run is (model, noise prior, mean λ of the non-key frames
where the prior has λ, mean correlation of two frames' noise under the prior); what it cost (optimizer steps,
training wall time summed over sessions, mean time per training step, parameters; with a FLOPs budget also the
FLOPs of one step and of all the steps done); and how it did: the last logged value and the mean of the last
``results.loss_window`` logged values of ``train/loss``, ``train/loss_base`` and ``train/loss_residual`` (from the
run's TensorBoard event files), every metric of ``metrics.json`` (e.g. ``flicker64_16f`` next to its real reference
``flicker64_16f_real``) and the evaluation protocol preset (``eval_protocol``). ``results.md`` groups the runs of
one grid cell over seeds as mean ± sample std (n − 1). Training losses are a convergence check, not a quality
measure across λ: each λ changes the regression target (the noise the model must predict), so compare samples and
metrics, not losses, across the λ axis.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable, Optional

from omegaconf import DictConfig

from vfusion.rundir import REAL_VS_REAL_FILE, RunDir, read_json_file
from vfusion.studies import plots
from vfusion.studies.rows import LOSS_TAGS, ci95, group_rows, mean_std  # also importable from here, as before
from vfusion.studies.spec import Study, plan_study
from vfusion.utils.io import atomic_write_text, portable_paths


# --------------------------------------------------------------------------- reading a run

def tb_scalars(run_dir: Path, tags: Optional[tuple[str, ...]] = None) -> dict[str, list[tuple[int, float]]]:
    """Scalars of all event files of a run, merged by step (a re-logged step keeps its newest value)."""
    files = sorted(RunDir(run_dir).tb_dir.rglob("events.out.tfevents.*"))
    if not files:
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    merged: dict[str, dict[int, tuple[float, float]]] = {}
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            if tags is not None and tag not in tags:
                continue
            d = merged.setdefault(tag, {})
            for e in acc.Scalars(tag):
                if e.step not in d or e.wall_time >= d[e.step][0]:
                    d[e.step] = (e.wall_time, float(e.value))
    return {tag: sorted((s, v) for s, (_, v) in d.items()) for tag, d in merged.items()}


def noise_description(cfg: DictConfig) -> str:
    from vfusion.diffusion.priors import describe

    return describe(cfg.noise)


def mean_nonkey_lambda(cfg: DictConfig) -> Optional[float]:
    """Mean λ over the non-key frames: one number that places any schedule on the λ axis (None for the
    PYoCo priors, which have no λ; 0 for ``independent``)."""
    from vfusion.diffusion.noise import lambdas_from_config
    from vfusion.diffusion.priors import ALPHA_PRIORS
    from vfusion.layout import keyframe_index

    t = int(cfg.data.num_frames)
    if t < 2 or cfg.noise.prior in ALPHA_PRIORS:
        return None
    lam = lambdas_from_config(cfg.noise, t)
    k = keyframe_index(t)
    rest = [float(v) for i, v in enumerate(lam.tolist()) if i != k]
    return sum(rest) / len(rest)


def mean_frame_correlation(cfg: DictConfig) -> Optional[float]:
    """Mean correlation of the noise of two different frames under the run's prior (the off-diagonal mean
    of ``prior.correlation()``, averaged over the noise levels when λ depends on t): one number that places
    every prior, λ or α, on one axis."""
    from vfusion.diffusion.noise import noise_prior_from_config

    t = int(cfg.data.num_frames)
    if t < 2:
        return None
    prior = noise_prior_from_config(cfg.noise, t)
    levels = [i / 10 for i in range(11)] if getattr(prior, "time_dependent", False) else [None]  # mean over t
    corr = sum(prior.correlation(level=u) for u in levels) / len(levels)
    return float((corr.sum() - corr.diagonal().sum()) / (t * (t - 1)))


def _params(info: dict) -> tuple[Optional[int], Optional[int]]:
    total = info.get("parameters", {}).get("total")
    if isinstance(total, dict):
        return total.get("total"), total.get("trainable")
    return total, None


def run_row(study: Study, plan, cfg: DictConfig, window: int) -> tuple[dict, dict]:
    """(row of results.csv, loss curves of the run)."""
    d = plan.run_dir
    run = RunDir(d)
    status = run.read_status() or {}
    # a phase that never ran has no time (not 0 s)
    phases = {k: v for k, v in status.get("phases", {}).items() if v.get("sessions")}
    info = run.read_model_info() or {}
    total, trainable = _params(info)
    row = {"run_id": plan.run_id, **plan.labels, "seed": plan.seed, "state": status.get("state", "not started"),
           "model_name": cfg.model.name, "noise_schedule": noise_description(cfg),
           "lambda_mean": mean_nonkey_lambda(cfg), "frame_corr": mean_frame_correlation(cfg),
           "steps": phases.get("train", {}).get("global_step", info.get("global_step")),
           "train_s": phases.get("train", {}).get("seconds"),
           "train_sessions": phases.get("train", {}).get("sessions"),
           "mean_step_s": phases.get("train", {}).get("mean_step_s", info.get("mean_train_step_s")),
           "params": total, "params_trainable": trainable,
           "sample_s": phases.get("sample", {}).get("seconds"),
           "eval_s": phases.get("evaluate", {}).get("seconds")}
    flops = status.get("flops") or plan.flops  # what the run was trained with, else what the plan counts
    if flops:
        done = row["steps"]
        row["flops_per_step"] = int(flops["per_step"])
        row["flops_total"] = int(flops["per_step"]) * int(done) if done is not None else None
    curves = tb_scalars(d, LOSS_TAGS) if run.tb_dir.is_dir() else {}
    for tag in LOSS_TAGS:
        short = tag.split("/", 1)[1]
        values = [v for _, v in curves.get(tag, [])]
        row[f"{short}_final"] = values[-1] if values else None
        row[f"{short}_last{window}"] = sum(values[-window:]) / len(values[-window:]) if values else None
    metrics = run.read_metrics() or {}
    if metrics:  # which real clips the metrics compare with (their names carry it too)
        row["eval_protocol"] = metrics.get("protocol", {}).get("protocol", "vfusion")
    for k, v in dict(metrics.get("metrics", {})).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            row[f"metric:{k}"] = float(v)
    return row, curves


def collect(study: Study) -> tuple[list[dict], dict[str, dict], list]:
    """Rows of every planned run (finished or not), their loss curves, and the plans."""
    window = int(study.spec.results.loss_window)
    rows, curves, plans = [], {}, []
    for plan, cfg in plan_study(study):
        row, c = run_row(study, plan, cfg, window)
        rows.append(row)
        curves[plan.run_id] = c
        plans.append((plan, cfg))
    return rows, curves, plans


# --------------------------------------------------------------------------- tables

def _columns(rows: list[dict]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    metric_cols = [c for c in cols if c.startswith("metric:")]
    return [c for c in cols if not c.startswith("metric:")] + sorted(metric_cols)


def write_csv(path: Path, rows: list[dict]) -> None:
    cols = _columns(rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    atomic_write_text(path, buf.getvalue())


def _fmt(v: Optional[float], digits: int = 4) -> str:
    if v is None:
        return "—"
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}"


def _fmt_ms(m, s, scale=1.0, digits=4) -> str:
    if m is None:
        return "—"
    out = _fmt(m * scale, digits)
    return out + (f" ± {_fmt(s * scale, 2)}" if s else "")  # no "± 0" for equal values (steps, params)


def _md_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


FLOPS_HEADERS = {"flops_per_step": "FLOP/step", "flops_total": "train FLOP"}


def _table_columns(study: Study, rows: list[dict]) -> tuple[list[str], list[str], list[str]]:
    """The metric, loss and FLOPs columns the rows have: the columns of both tables."""
    window = int(study.spec.results.loss_window)
    metric_cols = [c for c in _columns(rows) if c.startswith("metric:") and not c.endswith("_std")]
    loss_cols = [c for c in (f"loss_last{window}", f"loss_base_last{window}", f"loss_residual_last{window}")
                 if any(r.get(c) is not None for r in rows)]
    flops_cols = [c for c in ("flops_per_step", "flops_total") if any(r.get(c) is not None for r in rows)]
    return metric_cols, loss_cols, flops_cols


def cell_table(study: Study, rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The pooled table, one row per grid cell: mean ± sample std over seeds, and for metrics the 95%
    t-interval [low, high] (results.md and the HTML report both show it)."""
    window = int(study.spec.results.loss_window)
    metric_cols, loss_cols, flops_cols = _table_columns(study, rows)
    header = list(study.axes) + ["model.name", "noise", "λ̄ (non-key)", "ρ̄ (frames)", "n", "steps", "train [min]", "step [ms]", "params [M]"]
    header += [FLOPS_HEADERS[c] for c in flops_cols]
    header += [c.replace(f"_last{window}", "") for c in loss_cols] + [c.split(":", 1)[1] for c in metric_cols]
    body = []
    for key, group in group_rows(study, rows):
        done = [r for r in group if r["state"] == "done"]
        first = group[0]
        cells = list(key) + [str(first["model_name"]), str(first["noise_schedule"]), _fmt(first["lambda_mean"], 3),
                             _fmt(first["frame_corr"], 3), f"{len(done)}/{len(group)}"]
        for col, scale in (("steps", 1), ("train_s", 1 / 60), ("mean_step_s", 1000), ("params", 1e-6)):
            m, s, _ = mean_std([r.get(col) for r in done])
            cells.append(_fmt_ms(m, s, scale))
        for col in flops_cols + loss_cols:
            m, s, _ = mean_std([r.get(col) for r in done])
            cells.append(_fmt_ms(m, s))
        for col in metric_cols:
            values = [r.get(col) for r in done]
            m, s, _ = mean_std(values)
            interval = ci95(values)
            cells.append(_fmt_ms(m, s) + (f" [{_fmt(interval[0])}, {_fmt(interval[1])}]" if interval else ""))
        body.append(cells)
    return header, body


def results_markdown(study: Study, rows: list[dict], floor: Optional[dict] = None, plots: list[str] = ()) -> str:
    window = int(study.spec.results.loss_window)
    spec = study.spec
    metric_cols, loss_cols, flops_cols = _table_columns(study, rows)
    b = spec.budget
    limits = [x for x in (f"{b.steps} steps" if b.steps is not None else "",
                          f"{_fmt(float(b.flops))} training FLOPs (steps = floor(budget / FLOPs of one step, counted "
                          "with FlopCounterMode))" if b.flops is not None else "",
                          f"{b.minutes:g} min of training wall clock" if b.minutes else "") if x]
    budget = " or ".join(limits) + (" (whichever comes first)" if len(limits) > 1 else "")
    out = [f"# Study `{study.name}`", ""]
    if spec.description:
        out += [str(spec.description).strip(), ""]
    out += [f"- base experiment: `{study.base_path}`; study overrides: `{' '.join(spec.overrides) or '—'}`"
            + (f"; command line: `{' '.join(study.cli_overrides)}`" if study.cli_overrides else ""),
            f"- budget per run: {budget}; seeds: {list(spec.seeds)}",
            f"- runs: {sum(r['state'] == 'done' for r in rows)} of {len(rows)} done",
            f"- table: mean ± sample std over the seeds of each cell (n = runs done), and for metrics with 2 or more "
            "seeds the 95% Student-t interval of the mean over seeds [low, high]; losses are the mean of the "
            f"last {window} logged values (a convergence check: across λ the regression target changes, so "
            "losses do not rank sample quality)", ""]
    header, body = cell_table(study, rows)
    out += ["## Results (pooled over seeds)", "", _md_table(header, body), ""]
    if floor and floor.get("metrics"):
        out += ["Real-vs-real floor (two disjoint halves of the real clips): "
                + ", ".join(f"{k} = {_fmt(v)}" for k, v in floor["metrics"].items() if isinstance(v, (int, float))), ""]
    # per run
    header = ["run", "seed", "state", "noise", "steps", "train [min]", "step [ms]"] + \
        [FLOPS_HEADERS[c] for c in flops_cols] + \
        [c.replace(f"_last{window}", "") for c in loss_cols] + [c.split(":", 1)[1] for c in metric_cols]
    body = []
    for r in rows:
        body.append([r["run_id"], str(r["seed"]), r["state"], r["noise_schedule"], _fmt(r.get("steps"), 6),
                     _fmt_ms(r.get("train_s"), None, 1 / 60), _fmt_ms(r.get("mean_step_s"), None, 1000)]
                    + [_fmt(r.get(c)) for c in flops_cols + loss_cols + metric_cols])
    out += ["## Runs", "", _md_table(header, body), ""]
    bad = [r for r in rows if r["state"] in ("failed", "interrupted")]
    if bad:
        out += ["## Unfinished runs", ""]
        for r in bad:
            err = _read_status_error(study, r["run_id"])
            out.append(f"- `{r['run_id']}`: {r['state']}" + (f" — {err}" if err else ""))
        out.append("")
    if plots:
        out += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    out += ["Metric names carry their protocol (see metrics.json of each run and docs/protocols.md). "
            f"All runs in TensorBoard: `tensorboard --logdir {portable_paths(str(study.study_dir.resolve() / 'runs'))}`.", ""]
    return "\n".join(out)


def _read_status_error(study: Study, run_id: str) -> Optional[str]:
    st = RunDir(study.study_dir / "runs" / run_id).read_status() or {}
    return st.get("error")


def write_report(study: Study, echo: Callable[[str], None] = print, collected: Optional[tuple] = None
                 ) -> dict[str, Path]:
    """results.csv, results.md and plots/*.png in the study directory; returns their paths. ``collected``:
    what :func:`collect` returned, when the caller has it already."""
    study.study_dir.mkdir(parents=True, exist_ok=True)
    rows, curves, plans = collected or collect(study)
    paths = {"csv": study.study_dir / "results.csv", "md": study.study_dir / "results.md"}
    write_csv(paths["csv"], rows)
    floor = read_json_file(study.study_dir / REAL_VS_REAL_FILE) or {}
    made = plots.write_plots(study, rows, curves, study.study_dir / "plots", floor)
    rel = [str(p.relative_to(study.study_dir)) for p in made.values()]
    atomic_write_text(paths["md"], results_markdown(study, rows, floor, rel))
    paths.update({f"plot:{k}": p for k, p in made.items()})
    echo(f"study results: {paths['md']} ({len(rows)} runs), {paths['csv']}, plots in {study.study_dir / 'plots'}")
    return paths
