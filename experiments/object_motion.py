"""Do the embedded dataset's objects move in a run's samples, and do they move smoothly?

    python experiments/object_motion.py --run runs/embedded_videofusion [--run RUN ...] \
        [--num-real 32] [--out FILE.json] [--real-filmstrip FILE.png]

Flicker and drift (``vfusion evaluate --metrics flicker,drift``) say how much a clip changes, not what
changes: a ball that fades in and out and a ball that rolls can score the same. This script follows the
two objects of the embedded dataset that have a colour of their own, the red ball of ``BouncingBall``
and the yellow bob of ``SwingingPendulum``, by a colour mask (``vfusion.evaluation.objects``, which also
gives ``vfusion evaluate`` its object metrics), frame by frame, per class, in the run's samples
(``RUN/samples/videos.npy``, before any video codec, with the labels of ``samples.json``) and in
``--num-real`` real clips of the run's evaluation split. Per class it prints the means over clips of:

* ``seen``: the share of frames where the object is visible (mask area >= ``MIN_AREA`` pixels); an
  object that fades out scores below 1;
* ``area cv``: the object's mask area over the frames it is seen, std / mean (fading and brightening);
* ``step``: the mean distance (pixels) its centroid moves between consecutive frames where it is seen;
* ``jump``: the largest such step in the clip;
* ``travel``: how far it gets, the largest distance between two of its centroids in the clip.

A clip that moves as the real ones do has ``step`` and ``travel`` near the real values with ``jump``
not far above ``step``; a still object has ``travel`` near 0.

Over all clips it also prints how much the frames next to the keyframe change (``key change``: the mean of
|x_k − x_(k−1)| and |x_(k+1) − x_k|, grey levels) against the other consecutive pairs (``other change``). In
VideoFusion the keyframe is the base generator's own prediction and every other frame the residual
generator's, so a keyframe that stands out of its clip shows as ``key change`` above ``other change``;
in real clips the two are the same.

``--real-filmstrip`` draws 16 of those real clips as the samples' ``filmstrip.png`` draws the samples (8
frames a row, rows cycling through the classes in label order), to put beside it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from vfusion.evaluation.clip_sources import labelled_subset
from vfusion.evaluation.objects import MIN_AREA, TRACKED, track
from vfusion.inference.generate import FRAMES_FILE, MANIFEST
from vfusion.layout import keyframe_index
from vfusion.rundir import RunDir
from vfusion.utils.io import atomic_write_json
from vfusion.utils.video import filmstrip, write_png

def keyframe_change(clips: np.ndarray) -> dict:
    """``clips``: (N, T, H, W, 3) in [0, 1] -> mean change of the two pairs at the keyframe and of the others."""
    k = keyframe_index(clips.shape[1])
    steps = np.abs(np.diff(clips, axis=1)).mean(axis=(0, 2, 3, 4)) * 255        # (T-1,): pair (t, t+1)
    at_key = [k - 1, k]
    others = [i for i in range(len(steps)) if i not in at_key]
    return {"key_change": round(float(steps[at_key].mean()), 3), "other_change": round(float(steps[others].mean()), 3)}


def summarise(clips: list[np.ndarray], mask_fn) -> dict:
    per = [track(c, mask_fn) for c in clips]
    keys = ("seen", "area_cv", "step", "jump", "travel")
    return {"clips": len(per), **{k: round(float(np.mean([p[k] for p in per if k in p])), 3)
                                  if any(k in p for p in per) else None for k in keys}}


def sample_clips(run: Path) -> tuple[np.ndarray, list[int]]:
    folder = RunDir(run).samples_dir
    meta = json.loads((folder / MANIFEST).read_text())
    frames = np.load(folder / meta.get("frames_file", FRAMES_FILE))     # (N, T, H, W, 3) uint8
    return frames.astype(np.float32) / 255.0, [int(v) for v in meta["labels"]]


def real_clips(run: Path, num: int) -> tuple[np.ndarray, list[int], list[str]]:
    cfg = RunDir(run).config()
    clips, labels, names = labelled_subset(cfg.data, cfg.eval.get("real_split") or cfg.data.eval_split, num)
    frames = ((clips.permute(0, 2, 3, 4, 1) + 1) / 2).clamp(0, 1).numpy()             # (N, T, H, W, C)
    return frames, [int(v) for v in labels], names


def by_class(clips: np.ndarray, labels: list[int], names: list[str]) -> dict:
    out = {"all": keyframe_change(clips)}
    for name, fn in TRACKED.items():
        if name in names:
            chosen = [c for c, lab in zip(clips, labels) if lab == names.index(name)]
            if chosen:
                out[name] = summarise(chosen, fn)
    return out


def real_filmstrip(clips: np.ndarray, labels: list[int], num_classes: int, rows: int = 16) -> np.ndarray:
    """Rows cycling through the classes (row j: the next clip of class j mod K), as the samples are drawn."""
    import torch

    queues = {c: [i for i, lab in enumerate(labels) if lab == c] for c in range(num_classes)}
    order = [queues[j % num_classes].pop(0) for j in range(rows) if queues[j % num_classes]]
    videos = torch.from_numpy(clips[order]).permute(0, 4, 1, 2, 3) * 2 - 1          # (N, C, T, H, W) in [-1, 1]
    return filmstrip(videos)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="append", required=True, type=Path)
    ap.add_argument("--num-real", type=int, default=32)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--real-filmstrip", type=Path, help="also draw 16 real clips here (PNG), rows cycling classes")
    args = ap.parse_args()
    clips, labels, names = real_clips(args.run[0], args.num_real)
    if args.real_filmstrip:
        write_png(args.real_filmstrip, real_filmstrip(clips, labels, len(names)))
        print(f"wrote {args.real_filmstrip}")
    result = {"what": "object tracking by colour mask (experiments/object_motion.py): per class, means over clips",
              "min_area_px": MIN_AREA, "real": by_class(clips, labels, names), "runs": {}}
    for run in args.run:
        fake, fake_labels = sample_clips(run)
        result["runs"][run.name] = by_class(fake, fake_labels, names)
    cols = ("seen", "area_cv", "step", "jump", "travel")
    print(f"{'clips':28s} {'class':18s} " + " ".join(f"{c:>8s}" for c in cols))
    tables = [("real", result["real"])] + list(result["runs"].items())
    for who, table in tables:
        for cls, row in table.items():
            if cls == "all":
                continue
            print(f"{who:28s} {cls:18s} " + " ".join(f"{row[c]:8.2f}" if row[c] is not None else f"{'-':>8s}"
                                                    for c in cols))
    print(f"\n{'clips':28s} {'key change':>12s} {'other change':>12s}")
    for who, table in tables:
        print(f"{who:28s} {table['all']['key_change']:12.2f} {table['all']['other_change']:12.2f}")
    if args.out:
        atomic_write_json(args.out, result)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
