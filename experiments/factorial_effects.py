"""Factor effects of the factorial study: does the noise prior or the architecture explain a difference?

Reads a study's ``results.csv`` (``vfusion study --config configs/studies/factorial_*.yaml`` writes it)
and, for every metric, compares pairs of grid cells that differ in one factor only, seed by seed
(the runs of one seed share their stage-1 base UNet and data order, so the pairing removes what
they share):

- noise within an architecture: VideoFusion λ = 0.5 and λ 0.9→1.0 against λ = 0 (and each other), the
  video UNet decomposed λ = 0.5, PYoCo mixed and PYoCo progressive against independent, the DiT λ = 0.5
  against independent;
- architecture at the same noise: video UNet and DiT against VideoFusion at λ = 0 (independent), the
  video UNet against VideoFusion at λ = 0.5.

Each effect's 95% confidence interval is the Student-t interval of the mean paired difference over
seeds (``vfusion.studies.rows.ci95``: mean ± t(0.975, n−1)·s/√n, n = seeds; the evaluation clips of a
run are not resampled). An effect is **resolved** only when its interval excludes 0; otherwise it is
**within seed noise**. One seed gives no interval, so nothing is resolved. FVD and KVD are compared as
they are (lower is better); flicker, drift, motion and the object metrics by their gap to the real clips'
value, and the motion ratio by its gap to 1, since a still clip would win "lower". ``effects.md`` opens
with the per-cell means and the answer to "does sharing noise help?" in words, per architecture and metric.

    python experiments/factorial_effects.py --study-dir runs/studies/factorial_embedded \\
        --out experiments/results/factorial_embedded
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path
from typing import Optional

from vfusion.studies.rows import ci95

# metrics whose best value is the real clips' (compared by their gap to it), by name prefix
TO_REAL = ("flicker", "drift", "motion", "object_travel", "object_jump", "object_seen")

# (what is compared, cell minus reference): pairs of cells of the factorial study files that differ in one factor
PAIRS = [
    ("noise", "VideoFusion λ 0.5 − λ 0", "vf-l0.5", "vf-l0"),
    ("noise", "VideoFusion λ 0.9→1.0 − λ 0", "vf-l0.9to1", "vf-l0"),
    ("noise", "VideoFusion λ 0.9→1.0 − λ 0.5", "vf-l0.9to1", "vf-l0.5"),
    ("noise", "video UNet decomposed λ 0.5 − independent", "vunet-l0.5", "vunet-ind"),
    ("noise", "video UNet PYoCo mixed α 1 − independent", "vunet-pyoco-mixed", "vunet-ind"),
    ("noise", "video UNet PYoCo progressive α 2 − independent", "vunet-pyoco2", "vunet-ind"),
    ("noise", "DiT decomposed λ 0.5 − independent", "dit-l0.5", "dit-ind"),
    ("architecture", "video UNet − VideoFusion, independent noise", "vunet-ind", "vf-l0"),
    ("architecture", "DiT − VideoFusion, independent noise", "dit-ind", "vf-l0"),
    ("architecture", "video UNet − VideoFusion, decomposed λ 0.5", "vunet-l0.5", "vf-l0.5"),
]


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("state") == "done"]


def metric_names(rows: list[dict]) -> list[str]:
    names = [k.split(":", 1)[1] for k in rows[0] if k.startswith("metric:")] if rows else []
    return [n for n in names if not n.endswith(("_std", "_real"))]


def real_target(rows: list[dict], metric: str) -> Optional[float]:
    """The value a metric should have, when that is the real clips' rather than 'as low as possible': a still
    clip has no flicker and no motion, so those are compared by their gap to the real clips' value (the ratio
    of flows: to 1). None for FVD / KVD, where lower is better."""
    if metric.startswith("motion_ratio"):
        return 1.0
    if not metric.startswith(TO_REAL):
        return None
    reals = [float(r[f"metric:{metric}_real"]) for r in rows if r.get(f"metric:{metric}_real") not in (None, "")]
    return statistics.fmean(reals) if reals else None


def _values(rows, cell, metric, target: Optional[float] = None) -> dict[int, float]:
    out = {}
    for r in rows:
        v = r.get(f"metric:{metric}")
        if r["cell"] == cell and v not in (None, ""):
            out[int(r["seed"])] = float(v) if target is None else abs(float(v) - target)
    return out


def _sd(vals) -> float:
    return statistics.stdev(vals) if len(vals) > 1 else 0.0


def effects(rows: list[dict]) -> list[dict]:
    out = []
    for metric in metric_names(rows):
        target = real_target(rows, metric)
        for factor, what, cell, ref in PAIRS:
            a, b = _values(rows, cell, metric, target), _values(rows, ref, metric, target)
            seeds = sorted(set(a) & set(b))
            if not seeds:
                continue
            diffs = [a[s] - b[s] for s in seeds]
            mean = statistics.fmean(diffs)
            spread = max(_sd(list(a.values())), _sd(list(b.values())))
            interval = ci95(diffs)
            raw_a, raw_b = _values(rows, cell, metric), _values(rows, ref, metric)
            out.append({"metric": metric, "measure": "value" if target is None else "|value − real|",
                        "real": target, "cell_value_mean": statistics.fmean(raw_a.values()),
                        "reference_value_mean": statistics.fmean(raw_b.values()),
                        "factor": factor, "comparison": what, "cell": cell, "reference": ref,
                        "seeds": seeds, "diffs": diffs, "mean_diff": mean, "cell_mean": statistics.fmean(a.values()),
                        "reference_mean": statistics.fmean(b.values()), "seed_spread": spread,
                        "ci95": list(interval) if interval else None,
                        "resolved": bool(interval and (interval[0] > 0 or interval[1] < 0))})
    return out


def markdown(found: list[dict]) -> str:
    lines = ["## Factor effects (paired by seed; lower is better in every table below)", "",
             "Difference = cell − reference, per seed; 95% CI: Student-t interval of the mean difference over "
             "seeds; **resolved**: the interval excludes 0, otherwise within seed noise. FVD and KVD are compared "
             "as they are; flicker, drift, motion and the object metrics by their gap to the real clips' value "
             "(|value − real|: a still clip has no flicker and no motion), the motion ratio by its gap to 1.", ""]
    for metric in dict.fromkeys(e["metric"] for e in found):
        first = next(e for e in found if e["metric"] == metric)
        what = "value" if first["real"] is None else f"|value − {first['real']:.4g}| (real)"
        lines += [f"### {metric}: {what}", "", "| factor | comparison | reference | cell | difference per seed | "
                  "mean | 95% CI | verdict |", "|---|---|---|---|---|---|---|---|"]
        for e in (e for e in found if e["metric"] == metric):
            per = ", ".join(f"{d:+.4g}" for d in e["diffs"])
            ci = f"[{e['ci95'][0]:+.4g}, {e['ci95'][1]:+.4g}]" if e["ci95"] else "— (1 seed)"
            better, worse = ("lower", "higher") if e["real"] is None else ("closer to real", "further from real")
            verdict = ("**resolved**: " + (better if e["mean_diff"] < 0 else worse)) if e["resolved"] \
                else "within seed noise"
            lines.append(f"| {e['factor']} | {e['comparison']} | {e['reference_mean']:.4g} | {e['cell_mean']:.4g} | "
                         f"{per} | {e['mean_diff']:+.4g} | {ci} | {verdict} |")
        lines.append("")
    return "\n".join(lines)


# the columns of the per-cell summary: (metric name prefix, heading)
SUMMARY = [("fvd", "FVD"), ("kvd", "KVD"), ("flicker", "flicker"), ("motion_ratio", "motion ratio"),
           ("object_travel", "object travel (px)"), ("object_jump", "largest jump (px)")]


def summary_columns(names: list[str]) -> list[tuple[str, str]]:
    """``(metric, heading)`` of the main metrics among ``names``, in :data:`SUMMARY`'s order."""
    cols = [(next((n for n in names if n.startswith(prefix)), None), head) for prefix, head in SUMMARY]
    return [(n, h) for n, h in cols if n]


def cell_summary(rows: list[dict]) -> str:
    """Per cell: the mean over seeds of the main metrics with their 95% t-interval, and the real clips' values."""
    cols = summary_columns(metric_names(rows))
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    lines = ["| cell | seeds | " + " | ".join(h for _, h in cols) + " |", "|---|---|" + "---|" * len(cols)]
    for cell in cells:
        parts = []
        for name, _ in cols:
            vals = list(_values(rows, cell, name).values())
            interval = ci95(vals)
            parts.append(f"{statistics.fmean(vals):.4g}" + (f" [{interval[0]:.4g}, {interval[1]:.4g}]"
                                                           if interval else ""))
        n = len(_values(rows, cell, cols[0][0]))
        lines.append(f"| {cell} | {n} | " + " | ".join(parts) + " |")
    real = []
    for name, _ in cols:
        target = real_target(rows, name)
        real.append("—" if target is None else f"{target:.4g}")
    lines.append("| real clips | | " + " | ".join(real) + " |")
    return "\n".join(lines) + "\n"


# the cells with independent noise per frame (VideoFusion at λ = 0 shares nothing)
INDEPENDENT = ("vf-l0", "vunet-ind", "dit-ind")


def _word(e: dict) -> str:
    """Plain words for one effect: 'helps' / 'hurts' when resolved, 'unresolved' otherwise."""
    if e["ci95"] is None:
        return "1 seed"
    return ("helps" if e["mean_diff"] < 0 else "hurts") if e["resolved"] else "unresolved"


def _signed(x: float) -> str:
    return f"{x:+.0f}" if abs(x) >= 100 else f"{x:+.3g}"


def sharing_answer(found: list[dict]) -> str:
    """Does sharing noise help? One row per noise comparison (shared or correlated noise against independent
    noise in the same architecture), one column per main metric: the verdict, the mean paired difference and
    its 95% interval (in the metric's own measure: the value, or its gap to the real clips')."""
    cols = summary_columns(list(dict.fromkeys(e["metric"] for e in found)))
    by = {(e["comparison"], e["metric"]): e for e in found}
    lines = ["## Does sharing noise help? (per architecture and metric)", "",
             "Each entry: the verdict, then cell − reference [95% t-interval]. **helps**: the interval is below 0 "
             "(lower FVD/KVD, or closer to the real clips); **hurts**: above 0; unresolved: it holds 0.", "",
             "| comparison | " + " | ".join(h for _, h in cols) + " |", "|---|" + "---|" * len(cols)]
    for factor, what, _, ref in PAIRS:
        if factor != "noise" or ref not in INDEPENDENT or not any((what, n) in by for n, _ in cols):
            continue
        parts = []
        for name, _ in cols:
            e = by.get((what, name))
            if e is None:
                parts.append("—")
                continue
            ci = f" [{_signed(e['ci95'][0])}, {_signed(e['ci95'][1])}]" if e["ci95"] else ""
            word = _word(e)
            parts.append(f"{'**' + word + '**' if e['resolved'] else word} {_signed(e['mean_diff'])}{ci}")
        lines.append(f"| {what} | " + " | ".join(parts) + " |")
    return "\n".join(lines) + "\n"


def plot_effects(found: list[dict], path: Path) -> Optional[Path]:
    """A forest plot per metric: each effect's mean paired difference with its 95% interval (none: one seed),
    and the zero line an interval must leave to be resolved."""
    metrics = list(dict.fromkeys(e["metric"] for e in found))
    if not metrics:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(metrics))
    rows = -(-len(metrics) // cols)
    labels = list(dict.fromkeys(e["comparison"] for e in found))
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 0.32 * len(labels) * rows + 1.2 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for e in (e for e in found if e["metric"] == metric):
            y = labels.index(e["comparison"])
            color = "tab:blue" if e["resolved"] else "tab:gray"
            if e["ci95"]:
                ax.plot(e["ci95"], [y, y], color=color, lw=2)
            ax.plot([e["mean_diff"]], [y], "o", color=color)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels if ax in axes[:, 0] else [], fontsize=7)
        ax.invert_yaxis()
        first = next(e for e in found if e["metric"] == metric)
        ax.set_title(metric + ("" if first["real"] is None else " (gap to real)"), fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle("cell − reference per seed: mean and 95% t-interval (blue: resolved; lower is better)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--study-dir", required=True, help="the study directory (with results.csv)")
    p.add_argument("--out", default=None, help="folder for effects.md and effects.json (default: the study dir)")
    a = p.parse_args(argv)
    csv_path = Path(a.study_dir) / "results.csv"
    if not csv_path.is_file():
        print(f"factorial_effects: no results.csv in {a.study_dir}; run the study (or vfusion study --report-only) "
              "first", file=sys.stderr)
        return 2
    rows = read_rows(csv_path)
    found = effects(rows)
    out = Path(a.out or a.study_dir)
    out.mkdir(parents=True, exist_ok=True)
    from vfusion.utils.io import atomic_write_json, atomic_write_text

    atomic_write_json(out / "effects.json", found)
    summary = "# Factorial study: cells and paired factor effects\n\n"
    if rows:
        summary += "## Per cell: mean over seeds [95% t-interval]\n\n" + cell_summary(rows) + "\n"
    figure = "\n![effects](effects.png)\n" if plot_effects(found, out / "effects.png") else ""
    answer = sharing_answer(found) + "\n" if found else ""
    atomic_write_text(out / "effects.md", summary + answer + markdown(found) + figure)
    print(markdown(found))
    print(f"wrote {out / 'effects.md'}, {out / 'effects.json'} and {out / 'effects.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
