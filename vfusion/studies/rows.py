"""What the study tables and plots both read from the rows of ``results.csv``: the loss tags
a row summarises, the runs of one grid cell, mean ± sample std and the t-interval over seeds.

A row is one run (``report.run_row``): its grid labels (one key per axis), ``seed``,
``state`` and the measured values.
"""

from __future__ import annotations

import math
from typing import Optional

from vfusion.studies.spec import Study

LOSS_TAGS = ("train/loss", "train/loss_base", "train/loss_residual")


def mean_std(values: list[float]) -> tuple[Optional[float], Optional[float], int]:
    """(mean, sample std (n − 1), n) of the values that are not None/NaN; std None below 2 values."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None, None, 0
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, None, 1
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)), len(vals)


def ci95(values: list[float]) -> Optional[tuple[float, float]]:
    """Student-t 95% confidence interval of the mean, ``mean ± t(0.975, n−1)·s/√n`` over the values that are
    not None/NaN (seeds, or paired per-seed differences); None below 2 values."""
    m, s, n = mean_std(values)
    if n < 2:
        return None
    from scipy.stats import t

    half = float(t.ppf(0.975, n - 1)) * s / math.sqrt(n)
    return m - half, m + half


def group_rows(study: Study, rows: list[dict]) -> list[tuple[tuple, list[dict]]]:
    """Rows of each grid cell (all axis labels equal), in grid order."""
    axes = list(study.axes)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[a] for a in axes), []).append(r)
    return list(groups.items())
