"""Which metrics were asked for, and the detector networks they need.

``expand_metrics`` turns what a user typed (``fvd,kvd,fid,is``) into the canonical
list the rest of the evaluation uses (``is`` -> ``is_k400_i3d``, plus ``is_ucf_c3d``
when C3D weights are given); ``load_detectors`` loads only the networks that list
needs, from the verified weight files (``weights.py``); the pixel statistics (``flicker``, ``drift``,
``motion``, ``objects``) need none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from vfusion.errors import UserError

# flicker, drift, motion and objects are pixel statistics (clip_stats.py): they need no detector
METRIC_CHOICES = ("fvd", "kvd", "fid", "is", "is_k400_i3d", "is_ucf_c3d", "flicker", "drift", "motion", "objects",
                  "clipsim")
# metrics of how generated clips match their text (clipsim.py), computed beside the detectors' ones
TEXT_METRICS = ("clipsim",)


@dataclass
class Detectors:
    """The networks metrics need; any may be None when no requested metric uses it.

    i3d: clips (B, C, T, H, W) in [-1, 1] -> (B, 400) Kinetics-400 logits.
    inception: torchmetrics-style feature module, uint8 frames (N, 3, H, W) -> (N, 2048).
    c3d: clips (B, 3, 16, H, W) in [-1, 1] -> (B, 101) UCF-101 logits.
    info: per detector name, what metrics.json records (sha256, path, ...). A detector
    whose info has no sha256 never has its real statistics cached.
    """

    i3d: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    inception: Optional[nn.Module] = None
    c3d: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    info: dict[str, dict] = field(default_factory=dict)
    device: str = "cpu"
    # per metric, the fewest frames its detector takes (``limits.NEEDS``; empty: unknown, not checked)
    frame_minima: dict[str, int] = field(default_factory=dict)

    def sha256(self, name: str) -> Optional[str]:
        """The sha256 of detector ``name``'s weight file (None: unknown, so never cached)."""
        return self.info.get(name, {}).get("sha256")


def default_device(device: Optional[str] = None) -> str:
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def expand_metrics(metrics: str | Sequence[str], c3d_weights: Optional[str] = None) -> list[str]:
    """Canonical metric list: ``is`` means ``is_k400_i3d`` (+ ``is_ucf_c3d`` when C3D weights are given)."""
    if isinstance(metrics, str):
        metrics = [m for m in metrics.split(",")]
    out: list[str] = []
    for m in (m.strip().lower() for m in metrics):
        if not m:
            continue
        if m not in METRIC_CHOICES:
            raise UserError(f"unknown metric '{m}'; choose from {', '.join(METRIC_CHOICES)}")
        names = ["is_k400_i3d"] + (["is_ucf_c3d"] if c3d_weights else []) if m == "is" else [m]
        out += [n for n in names if n not in out]
    if "is_ucf_c3d" in out and not c3d_weights:
        raise UserError("metric is_ucf_c3d needs a C3D fine-tuned on UCF-101: pass --c3d-weights FILE "
                        "(config: eval.c3d_weights); these weights cannot be downloaded here")
    if not out:
        raise UserError("no metric requested; e.g. --metrics fvd,kvd,fid,is")
    return out


def load_detectors(metrics: Sequence[str], weights_dir: Optional[str] = None, device: Optional[str] = None,
                   c3d_weights: Optional[str] = None) -> Detectors:
    """Load the detectors the metrics need (from the verified weight files)."""
    from vfusion.evaluation.limits import NEEDS

    device = default_device(device)
    det = Detectors(device=device, frame_minima={m: NEEDS[m].frames for m in metrics})
    if {"fvd", "kvd", "is_k400_i3d"} & set(metrics):
        from vfusion.evaluation.i3d import i3d_features, load_i3d

        model = load_i3d(weights_dir=weights_dir, device=device)
        det.i3d = lambda v: i3d_features(model, v)
        det.info["i3d_k400"] = dict(model.detector_info)
    if "fid" in metrics:
        from vfusion.evaluation.inception import load_inception

        det.inception = load_inception(weights_dir=weights_dir, device=device)
        det.info["inception_v3"] = dict(det.inception.detector_info)
    if "is_ucf_c3d" in metrics:
        from vfusion.evaluation.c3d import load_c3d

        det.c3d = load_c3d(c3d_weights, device=device)
        det.info["c3d_ucf101"] = dict(det.c3d.detector_info)
    return det
