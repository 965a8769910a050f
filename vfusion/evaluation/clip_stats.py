"""Per-clip statistics computed from the pixels alone (no detector), and the metrics they give.

Each entry of ``CLIP_STATISTICS`` turns a batch of clips into one row of numbers per clip; evaluation
accumulates the rows of both sides, caches the real side's under the entry's name, and reports each
column as the mean over the generated clips next to the mean over the real clips (``..._real``). Rows
can hold NaN where a clip has no value (an object metric on a clip of another class): the means skip them.

* ``temporal``: flicker and drift, in grey levels (``temporal.py``);
* ``motion``: mean optical-flow magnitude, pixels per frame, with the ratio generated / real
  (``motion.py``);
* ``objects``: travel, largest jump and visibility of the embedded dataset's coloured objects, which
  needs each clip's class (``objects.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch


def _temporal(videos, labels, class_names) -> np.ndarray:
    from vfusion.evaluation.temporal import clip_statistics

    return clip_statistics(videos).cpu().numpy()


def _motion(videos, labels, class_names) -> np.ndarray:
    from vfusion.evaluation.motion import clip_motion

    return clip_motion(videos).numpy()[:, None]


def _objects(videos, labels, class_names) -> np.ndarray:
    from vfusion.evaluation.objects import clip_objects

    return clip_objects(videos, labels, class_names)


def _motion_protocol() -> dict:
    from vfusion.evaluation.motion import protocol

    return protocol()


def _objects_protocol() -> dict:
    from vfusion.evaluation.objects import MIN_AREA, TRACKED

    return {"objects": {name: mask.__name__.replace("_", " ") for name, mask in TRACKED.items()}, "tracking": f"colour mask, centroid; seen when its area >= {MIN_AREA} pixels",
            "object_travel": "largest distance between two of the object's centroids in a clip (pixels)",
            "object_jump": "largest centroid move between consecutive frames where it is seen (pixels)",
            "object_seen": "share of frames where it is seen",
            "value": "mean over the clips of the tracked classes (a clip without a value is skipped)"}


def _temporal_protocol() -> dict:
    return {"flicker": "mean over clips of mean |x_{t+1} - x_t| (consecutive frames)",
            "drift": "mean over clips of mean |x_t - x_key| over the non-key frames, key = middle frame",
            "unit": "grey levels (0..255) per pixel and channel, after quantisation to uint8"}


@dataclass(frozen=True)
class ClipStatistic:
    """``metrics``: each metric name a user asks for -> the columns it reports; ``columns``: the names of
    the row's values (also the reported names' stems); ``compute(videos, labels, class_names)`` -> ``(B, k)``;
    ``ratio``: also report generated / real; ``labelled``: needs each clip's class; ``version``: bump it
    when ``compute`` changes, so that cached real rows are recomputed."""

    columns: tuple[str, ...]
    metrics: dict
    compute: Callable[[torch.Tensor, Optional[Sequence[int]], Sequence[str]], np.ndarray]
    describe: Callable[[], dict]
    ratio: bool = False
    labelled: bool = False
    version: int = 1


CLIP_STATISTICS = {
    "temporal": ClipStatistic(("flicker", "drift"), {"flicker": (0,), "drift": (1,)}, _temporal, _temporal_protocol),
    "motion": ClipStatistic(("motion",), {"motion": (0,)}, _motion, _motion_protocol, ratio=True),
    "objects": ClipStatistic(("object_travel", "object_jump", "object_seen"), {"objects": (0, 1, 2)}, _objects,
                             _objects_protocol, labelled=True),
}
# the metric a user names -> the statistic that gives it
STATISTIC_OF = {m: name for name, s in CLIP_STATISTICS.items() for m in s.metrics}


def needed(metrics: Sequence[str]) -> list[str]:
    """The statistics the metrics need, in registry order."""
    return [name for name in CLIP_STATISTICS if any(STATISTIC_OF.get(m) == name for m in metrics)]


def _mean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def metric_values(metric: str, fake: np.ndarray, real: np.ndarray, n: int, t: int, suffix: str) -> dict[str, float]:
    """The reported values of ``metric`` from the rows of its statistic on both sides."""
    stat = CLIP_STATISTICS[STATISTIC_OF[metric]]
    out = {}
    for col in stat.metrics[metric]:
        name = stat.columns[col]
        made, real_mean = _mean(fake[:, col]), _mean(real[:, col])
        out[f"{name}{n}_{t}f"] = made
        out[f"{name}{n}_{t}f_real{suffix}"] = real_mean
        if stat.ratio:
            out[f"{name}_ratio{n}_{t}f{suffix}"] = made / real_mean if real_mean else float("nan")
    return out
