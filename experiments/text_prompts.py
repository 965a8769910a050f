"""Does the prompt decide what a text-to-video run generates? Per-prompt FVD and the class of each clip, for a
run trained on the embedded captions (configs/embedded_text.yaml).

    python experiments/text_prompts.py --run runs/embedded_text_videofusion --out experiments/results/text_main_job

One prompt per embedded class: the caption most of that class's held-out clips carry (e.g. "a red ball
bouncing to the right, slowly"). Every prompt is sampled ``--per-prompt`` times from the same seeds, so the
initial noise is the same and only the prompt changes. For each prompt:

- **per-prompt FVD** (I3D, as the main job) against the held-out clips of that prompt's class, next to the
  FVD of the same clips against every other class's held-out clips (the prompt's class should be nearest);
- **which class the clips look like**: the nearest class centroid of I3D features of ``--num-ref`` real
  training clips per class. The confusion matrix (prompt class x nearest class) shows whether changing the
  prompt changes the class; the same classifier on the held-out real clips gives its own accuracy;
- the motion each prompt's clips show (optical flow, pixels per frame).

Few clips per class, so read FVD's ranking across classes, not its value. Writes ``<out>/text_prompts.json``,
``<out>/results.md`` and ``<out>/prompts.png`` (per prompt: real clips of its class, then generated ones).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "experiments"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from tasks_embedded import Features, per_class_reference  # noqa: E402
from vfusion.evaluation.metrics import frechet_distance_from_features  # noqa: E402
from vfusion.evaluation.motion import clip_motion  # noqa: E402
from vfusion.inference.generate import generate, load_pipeline  # noqa: E402
from vfusion.rundir import RunDir, settings_from_config  # noqa: E402
from vfusion.utils.io import atomic_write_json, atomic_write_text  # noqa: E402
from vfusion.utils.video import filmstrip, write_png  # noqa: E402


def class_data(data_cfg):
    """The run's data section read as the class-labelled embedded dataset (the same clips, with labels)."""
    from omegaconf import OmegaConf

    return OmegaConf.merge(data_cfg, {"dataset": "embedded", "class_conditional": True, "cache": "none"})


def held_out(data_cfg):
    """``(clips by class, prompt by class, class names)``: every held-out clip, and the caption most held-out
    clips of each class carry."""
    from vfusion.data import build_dataset
    from vfusion.data.embedded import caption_lookup, class_names, generator_params

    dataset = build_dataset(data_cfg, split="test", train=False, seed=0)
    params = generator_params(data_cfg)
    names = class_names(params["num_classes"])
    caption_of = caption_lookup(params, names)
    clips: dict[int, list] = {c: [] for c in range(len(names))}
    captions: dict[int, list] = {c: [] for c in range(len(names))}
    for i, item in enumerate(dataset.index.items):
        video, label = dataset[i][:2]
        clips[int(label)].append(video)
        captions[int(label)].append(caption_of(item)[0])
    prompts = {c: Counter(v).most_common(1)[0][0] for c, v in captions.items()}
    return {c: torch.stack(v) for c, v in clips.items()}, prompts, names


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a stage-2 run trained on data.dataset=embedded_text")
    p.add_argument("--out", required=True)
    p.add_argument("--per-prompt", type=int, default=16, help="clips generated per prompt")
    p.add_argument("--num-ref", type=int, default=32, help="real training clips per class (class centroids)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    t0 = time.time()
    run = RunDir(args.run)
    cfg = run.config()
    if not (run.video_config().get("base") or {}).get("captions"):
        print(f"error: {args.run} was not trained on captions; train configs/embedded_text.yaml first",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = class_data(cfg.data)
    real, prompts, names = held_out(data)
    feats = Features(args.device)
    ref = per_class_reference(data, len(names), args.num_ref)
    ref_f = {c: feats(v) for c, v in ref.items()}
    centroids = np.stack([ref_f[c].mean(0) for c in range(len(names))])
    real_f = {c: feats(v) for c, v in real.items()}

    def nearest(f: np.ndarray) -> np.ndarray:
        return ((f[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)

    pipe = load_pipeline(run.path, args.device)
    base = settings_from_config(cfg, num_videos=args.per_prompt, seed=args.seed)
    rows, strips = [], []
    confusion = np.zeros((len(names), len(names)), dtype=int)
    for c, prompt in prompts.items():
        settings = replace(base, prompt=prompt)
        videos = torch.cat([v for v, _ in generate(pipe, settings, progress=True)])
        f = feats(videos)
        guess = nearest(f)
        np.add.at(confusion[c], guess, 1)
        fvd_all = {names[k]: frechet_distance_from_features(real_f[k], f) for k in real_f}
        rows.append({"class": names[c], "prompt": prompt, "fvd_own_class": fvd_all[names[c]],
                     "fvd_by_class": fvd_all, "nearest_class_accuracy": float((guess == c).mean()),
                     "flow": float(clip_motion(videos).mean()), "flow_real": float(clip_motion(real[c]).mean())})
        strips += [real[c][:4], videos[:4]]
        print(f"{names[c]}: '{prompt}' FVD to its class {fvd_all[names[c]]:.0f}, nearest-class accuracy "
              f"{rows[-1]['nearest_class_accuracy']:.2f}")
    real_acc = float(np.mean([(nearest(real_f[c]) == c).mean() for c in real_f]))
    write_png(out / "prompts.png", filmstrip(torch.cat(strips), max_frames=8))
    result = {"run": run.path.name, "settings": base.describe(), "per_prompt": args.per_prompt,
              "num_ref": args.num_ref, "real_per_class": {names[c]: len(v) for c, v in real.items()},
              "classes": names, "prompts": rows, "confusion": confusion.tolist(),
              "prompt_accuracy": float(np.trace(confusion) / confusion.sum()),
              "real_nearest_class_accuracy": real_acc, "wall_s": time.time() - t0}
    atomic_write_json(out / "text_prompts.json", result)
    atomic_write_text(out / "results.md", report(result))
    print(f"prompt -> class accuracy {result['prompt_accuracy']:.2f} (real held-out clips: {real_acc:.2f}); "
          f"wrote {out}")
    return 0


def report(r: dict) -> str:
    names = r["classes"]
    lines = ["| class | prompt | FVD to its class | nearest other class's FVD | clips nearest its class | "
             "flow (px/frame) | real flow |", "|---|---|---|---|---|---|---|"]
    for row in r["prompts"]:
        other = min(v for k, v in row["fvd_by_class"].items() if k != row["class"])
        lines.append(f"| {row['class']} | {row['prompt']} | {row['fvd_own_class']:.0f} | {other:.0f} | "
                     f"{row['nearest_class_accuracy']:.2f} | {row['flow']:.2f} | {row['flow_real']:.2f} |")
    lines += ["", "Confusion (rows: the prompt's class; columns: the class whose centroid is nearest):", "",
              "| prompt \\ nearest | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {names[i]} | " + " | ".join(str(v) for v in row) + " |" for i, row in enumerate(r["confusion"])]
    lines += ["", f"Prompt -> class accuracy {r['prompt_accuracy']:.2f}; the same classifier on the held-out real "
              f"clips: {r['real_nearest_class_accuracy']:.2f}. {r['per_prompt']} clips per prompt, same seeds for "
              f"every prompt; real clips per class: {r['real_per_class']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
