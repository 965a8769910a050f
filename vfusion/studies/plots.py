"""Study figures (matplotlib's object API with the Agg canvas: no pyplot state, no display).

``metric_vs_lambda.png``: each metric (or, without metrics, the training losses) against the mean λ of the non-key
frames, mean ± std over seeds; series by model, λ-schedule family and the labels of the axes that do not set
``noise.*``, constant schedules joined by lines, other schedules single labelled markers; drawn for two or more
distinct λ. ``loss_curves.png``: the three training losses per run against the optimizer step (EMA-smoothed), a
colour per grid cell, a line style per seed. ``metric_by_cell.png`` (two or more cells): each metric per cell, seeds
as dots, the mean as a bar, the real reference dashed (the real-vs-real floor of FVD/KVD, the real clips' value of
flicker/drift). ``metric_vs_steps.png`` (when step counts differ): each metric against the steps a run did, log
scale, a colour per model; with a FLOPs budget, the per-step view of equal compute. ``loss_vs_flops.png`` (when the
FLOPs per step are known): the loss curves against training FLOPs. ``samples.png``: each finished run's
``samples/filmstrip.png``, a column per grid cell, a row per seed.
"""

from __future__ import annotations

from pathlib import Path

from vfusion.rundir import RunDir
from vfusion.studies.rows import LOSS_TAGS, ci95, group_rows, mean_std
from vfusion.studies.spec import Study
from vfusion.utils.io import atomic_path

SMOOTHING = 0.9
LINESTYLES = ("-", "--", ":", "-.")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path


def _colors(n: int):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _ema(values: list[float], alpha: float = SMOOTHING) -> list[float]:
    out, acc = [], None
    for v in values:
        acc = v if acc is None else alpha * acc + (1 - alpha) * v
        out.append(acc)
    return out


def lambda_axes(study: Study) -> set[str]:
    """Axes whose variants set ``noise.*`` (they move runs along the λ axis)."""
    return {a for a, vs in study.axes.items() if any(o.strip().startswith("noise.") for v in vs for o in v.overrides)}


def plot_metric_vs_lambda(study: Study, rows: list[dict], path: Path) -> Path | None:
    done = [r for r in rows if r["state"] == "done" and r.get("lambda_mean") is not None]
    if len({round(r["lambda_mean"], 6) for r in done}) < 2:
        return None
    window = int(study.spec.results.loss_window)
    ys = _metric_keys(done)
    ylabel = {k: k.split(":", 1)[1] for k in ys}
    if not ys:
        ys = [c for c in (f"loss_last{window}", f"loss_residual_last{window}")
              if any(r.get(c) is not None for r in done)]
        ylabel = {k: f"{k.replace(f'_last{window}', '')} (train, mean of last {window})" for k in ys}
    if not ys:
        return None
    lam_axes = lambda_axes(study)
    other = [a for a in study.axes if a not in lam_axes]

    def series_key(r):
        family = r["noise_schedule"].split()[0]
        family = "constant" if family == "independent" else family  # λ ≡ 0: the constant schedule's λ = 0 end
        return (r["model_name"], family, *(r[a] for a in other))

    keys = list(dict.fromkeys(series_key(r) for r in done))
    colors = dict(zip(keys, _colors(len(keys))))
    fig = _figure(5.0 * len(ys), 4.0)
    for j, y in enumerate(ys):
        ax = fig.add_subplot(1, len(ys), j + 1)
        for key in keys:
            pts: dict[float, list[dict]] = {}
            for r in done:
                if series_key(r) == key and r.get(y) is not None:
                    pts.setdefault(round(r["lambda_mean"], 6), []).append(r)
            if not pts:
                continue
            xs = sorted(pts)
            stats = [mean_std([r[y] for r in pts[x]]) for x in xs]
            label = " / ".join(str(k) for k in key)
            constant = key[1] == "constant"
            ax.errorbar(xs, [m for m, _, _ in stats], yerr=[s or 0.0 for _, s, _ in stats], color=colors[key],
                        marker="o" if constant else "s", linestyle="-" if constant and len(xs) > 1 else "none",
                        capsize=3, label=label)
            if not constant:  # decays etc.: name the point, its x is only the mean λ
                for x, (m, _, _) in zip(xs, stats):
                    names = {"/".join(r[a] for a in study.axes if a in lam_axes) for r in pts[x]}
                    ax.annotate(", ".join(sorted(names)), (x, m), textcoords="offset points", xytext=(4, 4),
                                fontsize=7)
        ax.margins(x=0.12)
        ax.set_xlabel("mean λ of the non-key frames")
        ax.set_ylabel(ylabel[y])
        ax.grid(alpha=0.3)
        if j == 0:
            ax.legend(fontsize=7)
    fig.suptitle(f"{study.name}: mean ± std over seeds")
    return _save(fig, path)


def _metric_keys(done: list[dict]) -> list[str]:
    return sorted({k for r in done for k in r if k.startswith("metric:") and not k.endswith(("_std", "_real"))})


def plot_metric_by_cell(study: Study, rows: list[dict], floor: dict | None, path: Path) -> Path | None:
    groups = [(k, [r for r in g if r["state"] == "done"]) for k, g in group_rows(study, rows)]
    groups = [(k, g) for k, g in groups if g]
    done = [r for _, g in groups for r in g]
    ys = _metric_keys(done)
    if len(groups) < 2 or not ys:
        return None
    floor_metrics = (floor or {}).get("metrics", {})
    colors = dict(zip(dict.fromkeys(g[0]["model_name"] for _, g in groups), _colors(len(groups))))
    fig = _figure(max(4.0, 0.45 * len(groups) + 1.5) * min(len(ys), 2), 3.6 * ((len(ys) + 1) // 2))
    for j, y in enumerate(ys):
        ax = fig.add_subplot((len(ys) + 1) // 2, min(len(ys), 2), j + 1)
        for i, (key, group) in enumerate(groups):
            vals = [r[y] for r in group if r.get(y) is not None]
            if not vals:
                continue
            m, _, _ = mean_std(vals)
            color = colors[group[0]["model_name"]]
            ax.bar(i, m, color=color, alpha=0.35, width=0.7)
            ax.scatter([i] * len(vals), vals, color=color, s=14, zorder=3)
            interval = ci95(vals)
            if interval is not None:
                ax.errorbar([i], [m], yerr=[[m - interval[0]], [interval[1] - m]], color="k", capsize=4,
                            linewidth=1, zorder=4)
        name = y.split(":", 1)[1]
        ref = floor_metrics.get(name)
        reals = [r.get(f"metric:{name}_real") for r in done if r.get(f"metric:{name}_real") is not None]
        label = "real vs real" if ref is not None else "real clips"
        ref = ref if ref is not None else (sum(reals) / len(reals) if reals else None)
        if ref is not None:
            ax.axhline(ref, color="k", linestyle="--", linewidth=1, label=label)
            ax.legend(fontsize=7, loc="upper right")
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(["_".join(k) for k, _ in groups], rotation=45, ha="right", fontsize=7)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{study.name}: each seed a dot, the bar their mean, the whisker its 95% t-interval")
    return _save(fig, path)


def plot_metric_vs_steps(study: Study, rows: list[dict], path: Path) -> Path | None:
    done = [r for r in rows if r["state"] == "done" and r.get("steps")]
    ys = _metric_keys(done)
    if len({int(r["steps"]) for r in done}) < 2 or not ys:
        return None
    groups = group_rows(study, rows)
    colors = dict(zip([k for k, _ in groups], _colors(len(groups))))
    fig = _figure(4.6 * len(ys), 3.8)
    for j, y in enumerate(ys):
        ax = fig.add_subplot(1, len(ys), j + 1)
        for key, group in groups:
            pts = [(int(r["steps"]), r[y]) for r in group if r in done and r.get(y) is not None]
            if pts:
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=colors[key], s=18, label="_".join(key))
        ax.set_xscale("log")
        ax.set_xlabel("optimizer steps done")
        ax.set_ylabel(y.split(":", 1)[1])
        ax.grid(alpha=0.3)
        if j == 0:
            ax.legend(fontsize=6)
    flops = {r.get("flops_total") for r in done}
    note = "" if None in flops else " (training FLOPs per run: " + ", ".join(f"{f:.2g}" for f in sorted(flops)[:3]) + \
        (" ..." if len(flops) > 3 else "") + ")"
    fig.suptitle(f"{study.name}: metrics against steps{note}", fontsize=9)
    return _save(fig, path)


def plot_loss_curves(study: Study, rows: list[dict], curves: dict[str, dict], path: Path,
                     per_flop: bool = False) -> Path | None:
    tags = [t for t in LOSS_TAGS if any(t in c for c in curves.values())]
    if not tags or (per_flop and not any(r.get("flops_per_step") for r in rows)):
        return None
    groups = group_rows(study, rows)
    colors = _colors(len(groups))
    seeds = list(study.spec.seeds)
    fig = _figure(5.5 * len(tags), 4.0)
    for j, tag in enumerate(tags):
        ax = fig.add_subplot(1, len(tags), j + 1)
        for (key, group), color in zip(groups, colors):
            for r in group:
                pts = curves.get(r["run_id"], {}).get(tag)
                if not pts:
                    continue
                style = LINESTYLES[seeds.index(r["seed"]) % len(LINESTYLES)] if r["seed"] in seeds else "-"
                scale = float(r.get("flops_per_step") or 0) if per_flop else 1.0
                if not scale:
                    continue
                ax.plot([s * scale for s, _ in pts], _ema([v for _, v in pts]), color=color, linestyle=style,
                        linewidth=1.2, label="_".join(key) if r is group[0] else None)
        ax.set_title(tag)
        ax.set_xlabel("training FLOPs (step x FLOPs per step)" if per_flop else "optimizer step")
        ax.grid(alpha=0.3)
        if j == 0:
            ax.legend(fontsize=7, title=f"line style: seed {seeds}", title_fontsize=7)
    fig.suptitle(f"{study.name}: training losses (EMA {SMOOTHING}){' against FLOPs' if per_flop else ''}")
    return _save(fig, path)


def _filmstrip(study: Study, run_id: str) -> Path:
    return RunDir(study.study_dir / "runs" / run_id).samples_filmstrip


def plot_samples(study: Study, rows: list[dict], path: Path) -> Path | None:
    from matplotlib.image import imread

    groups = [(k, g) for k, g in group_rows(study, rows) if any(_filmstrip(study, r["run_id"]).is_file() for r in g)]
    limit = int(study.spec.results.max_sample_panels)
    seeds = list(study.spec.seeds)
    cols = max(1, min(len(groups), max(1, limit // max(1, len(seeds)))))
    groups = groups[:cols]
    if not groups:
        return None
    images = {}
    for _, group in groups:
        for r in group:
            f = _filmstrip(study, r["run_id"])
            if r["seed"] in seeds and f.is_file():
                images[r["run_id"]] = imread(str(f))
    aspect = max(im.shape[0] / im.shape[1] for im in images.values())  # height / width of a panel
    panel_w = 2.6
    fig = _figure(panel_w * cols, (panel_w * aspect + 0.5) * len(seeds) + 0.4)
    for c, (key, group) in enumerate(groups):
        for r in group:
            if r["run_id"] not in images:
                continue
            ax = fig.add_subplot(len(seeds), cols, seeds.index(r["seed"]) * cols + c + 1)
            ax.imshow(images[r["run_id"]], interpolation="nearest")
            ax.set_title(f"{'_'.join(key)}\nseed {r['seed']}", fontsize=8)
            ax.axis("off")
    fig.suptitle(f"{study.name}: samples (rows: clips; columns: frames)")
    return _save(fig, path)


def write_plots(study: Study, rows: list[dict], curves: dict, out_dir: Path, floor: dict | None = None) -> dict[str, Path]:
    out_dir = Path(out_dir)
    made = {}
    for name, fn in (("metric_vs_lambda", lambda p: plot_metric_vs_lambda(study, rows, p)),
                     ("metric_by_cell", lambda p: plot_metric_by_cell(study, rows, floor, p)),
                     ("metric_vs_steps", lambda p: plot_metric_vs_steps(study, rows, p)),
                     ("loss_curves", lambda p: plot_loss_curves(study, rows, curves, p)),
                     ("loss_vs_flops", lambda p: plot_loss_curves(study, rows, curves, p, per_flop=True)),
                     ("samples", lambda p: plot_samples(study, rows, p))):
        p = fn(out_dir / f"{name}.png")
        if p is not None:
            made[name] = p
    return made
