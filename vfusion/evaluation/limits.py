"""How many clips and frames each metric needs: one table, checked before any clip is made or read.

The minima follow from the metrics: KVD's unbiased MMD² needs two samples per side, the Inception
Score splits the generated clips into ``IS_NUM_SPLITS`` parts, I3D's time axis needs
``I3D_MIN_FRAMES`` frames, the UCF-101 C3D reads 16, FID needs two images per side and flicker and
drift compare consecutive frames. Every check names the config key or flag that fixes it, so a
pipeline can refuse a hopeless evaluation before stage 1 instead of after hours of training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from vfusion.errors import UserError
from vfusion.evaluation.i3d import I3D_MIN_FRAMES
from vfusion.evaluation.metrics import IS_NUM_SPLITS


@dataclass(frozen=True)
class Needs:
    """A metric's minima: clips per side, frames per clip, images (clips x frames) per side."""

    real: int = 0
    fake: int = 0
    frames: int = 1
    images: int = 0
    detector: str = ""


NEEDS = {
    "fvd": Needs(real=1, fake=1, frames=I3D_MIN_FRAMES, detector="the I3D detector"),
    "kvd": Needs(real=2, fake=2, frames=I3D_MIN_FRAMES, detector="the I3D detector"),
    "fid": Needs(images=2),
    "is_k400_i3d": Needs(fake=IS_NUM_SPLITS, frames=I3D_MIN_FRAMES, detector="the I3D detector"),
    "is_ucf_c3d": Needs(fake=IS_NUM_SPLITS, frames=16, detector="the UCF-101 C3D"),
    "flicker": Needs(real=1, fake=1, frames=2),
    "drift": Needs(real=1, fake=1, frames=2),
    "motion": Needs(real=1, fake=1, frames=2),
    "objects": Needs(real=1, fake=1, frames=2),
}

# metrics that compare the generated clips with real ones (their names carry the clip count of both)
COMPARED = ("fvd", "kvd", "fid", "flicker", "drift", "motion", "objects")
# metrics the real-vs-real floor can give (IS is a property of one set)
FLOOR_METRICS = COMPARED
# each half of the floor holds at least this many real clips
FLOOR_MIN_HALF = 2


@dataclass(frozen=True)
class Keys:
    """How the messages name what sets each count (config keys for a run, flags for the CLI)."""

    clips: str = "eval.num_videos"
    frames: str = "data.num_frames"
    metrics: str = "eval.metrics"


CONFIG_KEYS = Keys()
CLI_KEYS = Keys(clips="--num-videos", frames="--num-frames", metrics="--metrics")


def floor_metrics(metrics: Sequence[str]) -> list[str]:
    """The requested metrics that have a real-vs-real floor, in order."""
    return [m for m in metrics if m in FLOOR_METRICS]


def check_frames(metrics: Sequence[str], num_frames: int, keys: Keys = CONFIG_KEYS,
                 minima: Optional[dict[str, int]] = None) -> None:
    """Clips of ``num_frames`` frames are long enough for every metric's detector: the real detectors'
    minima, or ``minima`` (``Detectors.frame_minima``) for the detectors at hand."""
    for m in metrics:
        need = NEEDS[m]
        least = need.frames if minima is None else minima.get(m, 1)
        if num_frames < least:
            by = f" ({need.detector})" if need.detector else ""
            raise UserError(f"{m} needs clips of at least {least} frames{by}, these have {num_frames}: raise "
                            f"{keys.frames} to {least} or drop {m} from {keys.metrics}")


def check_counts(metrics: Sequence[str], num_real: Optional[int], num_fake: Optional[int],
                 num_frames: Optional[int] = None, keys: Keys = CONFIG_KEYS) -> None:
    """Enough clips on each side (None: not known yet; ``num_frames`` for FID's image count), and never fewer
    real clips than generated ones for a metric that compares them: its name counts the generated clips and
    must not claim more real ones."""
    for m in metrics:
        need = NEEDS[m]
        real_min, fake_min = need.real, need.fake
        if need.images and num_frames:
            real_min = fake_min = max(real_min, -(-need.images // num_frames))
        short = [f"{least} {side} clips (got {have})" for side, least, have in
                 (("real", real_min, num_real), ("generated", fake_min, num_fake)) if have is not None and have < least]
        if short:
            raise UserError(f"{m} needs at least {' and '.join(short)}; raise {keys.clips} or drop {m} from "
                            f"{keys.metrics}")
    compared = [m for m in metrics if m in COMPARED]
    if compared and num_real is not None and num_fake is not None and num_real < num_fake:
        raise UserError(f"{', '.join(compared)} would compare {num_fake} generated clips with only {num_real} real "
                        f"ones: lower {keys.clips} to {num_real}, or give more real clips")


def check_split(metrics: Sequence[str], num_videos: int, available: int, where: str, floor: bool,
                keys: Keys = CONFIG_KEYS, split_key: str = "eval.real_split") -> None:
    """The real split holds the clips an evaluation of ``num_videos`` needs, and the floor's two halves."""
    if available < num_videos and any(m in COMPARED for m in metrics):
        raise UserError(f"{where} has {available} clips, fewer than the {num_videos} real clips {keys.clips}="
                        f"{num_videos} compares the generated ones with: lower {keys.clips} to {available}, or "
                        f"evaluate on a larger split ({split_key}=train or all)")
    if floor and floor_metrics(metrics):
        half = min(num_videos, available // 2)
        if half < FLOOR_MIN_HALF:
            raise UserError(f"the real-vs-real floor needs two halves of at least {FLOOR_MIN_HALF} real clips each; "
                            f"{where} has {available} (halves of {half}): evaluate on a larger split ({split_key}="
                            f"train or all), or set eval.real_vs_real=false")
        check_counts(floor_metrics(metrics), half, half, None, keys)
