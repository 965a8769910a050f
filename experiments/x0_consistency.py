"""At which noise level does a trained video denoiser stop agreeing with itself across frames?

    python experiments/x0_consistency.py --run runs/embedded_videofusion [--run RUN ...] \
        [--num-real 16] [--timesteps 50,200,400,600,800,950] [--out FILE.json]

For real clips of each run's evaluation split, noised with the run's own prior at timestep t, the
run's pipeline makes one prediction, converted to the clean-clip estimate x̂0 (clamped to [-1, 1]).
Printed per t:

* ``x0 change``: the mean frame-to-frame change of x̂0's coarse content (4x4 block means, grey
  levels), the same statistic for the real clips first. Near the real value, the frames agree on what
  the clip is; far above it, each frame decided its own background tone and object position;
* ``x0 error``: the mean |x̂0 − x| in grey levels.

Samples that flicker at the coarse scale (``vfusion evaluate --metrics flicker``) come from the noise
levels where ``x0 change`` is high: that is where the frames' content is decided. The noise draws
are seeded per timestep, so runs are compared on the same draws when their priors are the same.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from vfusion.evaluation.clip_sources import labelled_subset
from vfusion.evaluation.temporal import GREY_LEVELS_PER_UNIT, frame_change
from vfusion.layout import fold_frames, unfold_frames
from vfusion.rundir import RunDir
from vfusion.utils.io import atomic_write_json


def coarse_change(videos: torch.Tensor, block: int = 4) -> float:
    """Mean |Δ| between consecutive frames of the ``block`` x ``block`` means, grey levels."""
    coarse = unfold_frames(F.avg_pool2d(fold_frames(videos), block), videos.shape[2])
    return float(frame_change(coarse).mean())


def real_clips(run: Path, num: int) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = RunDir(run).config()
    clips, labels, _names = labelled_subset(cfg.data, cfg.eval.get("real_split") or cfg.data.eval_split, num)
    return clips, labels


@torch.no_grad()
def x0_rows(run: Path, videos: torch.Tensor, labels: torch.Tensor, timesteps: list[int]) -> list[dict]:
    from vfusion import VideoFusionPipeline

    pipe = VideoFusionPipeline.from_pretrained(str(run / "pipeline"))
    model, process, prior = pipe.model().eval(), pipe.process, pipe.spec().noise
    cond = pipe.condition(labels if int(pipe.video_config.get("num_classes", 0)) else None, None,
                          videos.shape[0], videos.device)
    rows = []
    for t in timesteps:
        tt = torch.full((videos.shape[0],), t, dtype=torch.long)
        level = process.noise_level(tt) if prior.time_dependent else None
        eps = prior(videos.shape, generator=torch.Generator().manual_seed(t), level=level)
        x_t = process.add_noise(videos, eps, tt)
        eps_hat = process.to_eps(model(x_t, tt, cond), x_t, tt)
        a = process.alpha(tt).view(-1, 1, 1, 1, 1)
        s = process.sigma(tt).view(-1, 1, 1, 1, 1)
        x0 = ((x_t - s * eps_hat) / a).clamp(-1, 1)
        rows.append({"t": t, "x0_change": coarse_change(x0),
                     "x0_error": float((x0 - videos).abs().mean() * GREY_LEVELS_PER_UNIT)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", required=True, type=Path, help="a trained run (repeatable)")
    ap.add_argument("--num-real", type=int, default=16, help="real clips of the evaluation split (default 16)")
    ap.add_argument("--timesteps", default="50,200,400,600,800,950", help="comma-separated training timesteps")
    ap.add_argument("--out", type=Path, help="write the table as JSON here")
    args = ap.parse_args()
    timesteps = [int(v) for v in args.timesteps.split(",")]

    videos, labels = real_clips(args.run[0], args.num_real)  # the same real clips for every run
    result = {"real_coarse_change": coarse_change(videos), "num_real": int(videos.shape[0]), "runs": {}}
    print(f"real clips: coarse frame-to-frame change {result['real_coarse_change']:.1f} grey levels")
    print("run | " + " | ".join(f"t={t}: x0 change / error" for t in timesteps))
    for run in args.run:
        rows = x0_rows(run, videos, labels, timesteps)
        result["runs"][str(run)] = rows
        print(f"{run} | " + " | ".join(f"{r['x0_change']:.1f} / {r['x0_error']:.1f}" for r in rows))
    if args.out:
        atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
