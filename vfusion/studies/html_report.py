"""``vfusion study report``: a study as one static HTML page that opens from disk, without a server.

The page holds the pooled table (mean ± std and the 95% t-interval over seeds), the plots of
``results.md``, and per cell one animated sample grid (the run's ``samples/grid.gif``) beside the
same number of real clips drawn from the study's evaluation split. Every path is relative to the
study directory, so the folder can be copied or served as it is.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Callable, Optional

from vfusion.rundir import RunDir
from vfusion.studies.report import cell_table, collect, write_report
from vfusion.studies.rows import group_rows
from vfusion.studies.spec import Study, run_config
from vfusion.utils.io import atomic_write_text

PAGE = "report.html"
REAL_GIF = Path("report_assets") / "real.gif"
REAL_CLIPS = 16
_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:12px}"
          "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f3f3f3}"
          "figure{display:inline-block;margin:6px;text-align:center;vertical-align:top}"
          "figcaption{font-size:12px}img.clip{image-rendering:pixelated;width:200px}")


def _real_clips(study: Study, plan, num: int, path: Path) -> Optional[str]:
    """Write ``num`` real clips of the study's evaluation split as a GIF grid; None (and why) when unreadable."""
    from vfusion.evaluation.clip_sources import labelled_subset
    from vfusion.utils.video import make_grid_frames, write_gif

    cfg = run_config(study, plan)
    try:
        clips, _, _ = labelled_subset(cfg.data, cfg.eval.get("real_split") or cfg.data.eval_split, num)
    except Exception as err:  # the dataset may live elsewhere now; the page still shows the samples
        return f"real clips unavailable ({type(err).__name__}: {err})"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_gif(path, make_grid_frames(clips), fps=int(cfg.sample.get("fps", 8)))
    return None


def _table(header: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def write_html(study: Study, echo: Callable[[str], None] = print) -> Path:
    """``report.html`` (and ``report_assets/``) in the study directory, after refreshing results.md and plots."""
    collected = collect(study)
    made = write_report(study, echo=lambda _: None, collected=collected)
    rows, _, plans = collected
    root = study.study_dir
    header, body = cell_table(study, rows)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(study.name)}</title>"
             f"<style>{_STYLE}</style></head><body>", f"<h1>Study <code>{html.escape(study.name)}</code></h1>"]
    if study.spec.description:
        parts.append(f"<p>{html.escape(str(study.spec.description).strip())}</p>")
    parts += ["<h2>Results (pooled over seeds: mean ± std [95% t-interval])</h2>", _table(header, body)]
    plots = [p for k, p in made.items() if k.startswith("plot:")]
    if plots:
        parts.append("<h2>Plots</h2>")
        parts += [f"<figure><img src='{html.escape(p.relative_to(root).as_posix())}' style='max-width:100%'>"
                  f"</figure>" for p in plots]
    parts.append("<h2>Samples: one run per cell beside real clips</h2>")
    note = _real_clips(study, plans[0][0], REAL_CLIPS, root / REAL_GIF) if plans else "no runs"
    real = (f"<figure><img class='clip' src='{REAL_GIF.as_posix()}'><figcaption>real clips</figcaption></figure>"
            if note is None else f"<p>{html.escape(note)}</p>")
    for key, group in group_rows(study, rows):
        done = sorted((r for r in group if r["state"] == "done"), key=lambda r: r["seed"])
        gif = next((g for g in (RunDir(Path("runs") / r["run_id"]).samples_grid for r in done) if (root / g).is_file()),
                   None)
        cell = "_".join(key) or study.name
        sample = (f"<figure><img class='clip' src='{gif.as_posix()}'><figcaption>{html.escape(cell)} "
                  f"({html.escape(gif.parts[1])})</figcaption></figure>" if gif else
                  f"<p>{html.escape(cell)}: no samples yet</p>")
        parts.append(f"<div class='cell' id='{html.escape(cell)}'><h3>{html.escape(cell)}</h3>{sample}{real}</div>")
    parts.append("</body></html>")
    page = root / PAGE
    atomic_write_text(page, "\n".join(parts) + "\n")
    echo(f"study report: {page} (open it in a browser)")
    return page
