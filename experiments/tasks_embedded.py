"""Sora's tasks measured on the embedded held-out split, for one or more trained runs (issue: image-to-video,
extension, interpolation, editing).

    python experiments/tasks_embedded.py --run runs/embedded_videofusion --run runs/embedded_vf_lambda0 \
        --out experiments/results/tasks

For each run, on ``--num`` held-out clips of its dataset's evaluation split (a seeded subset, as
``vfusion evaluate`` selects them) and with DDIM at ``--steps`` steps:

- **unconditional** samples with the held-out clips' classes, and **image-to-video** given each clip's real
  keyframe (VideoFusion: the middle frame as the base generator's keyframe) and given its real first frame
  (replacement): FVD (I3D, 32x32 clips upsampled, as the main job) against the held-out clips;
- a **still** baseline for image-to-video: the given frame repeated T times (FVD), and for every clip set the
  motion it shows: optical flow (pixels per frame) and the tracked objects' travel and largest jump
  (:mod:`vfusion.evaluation.objects`), so a task that returns a still clip is seen as one;
- **interpolation** from each clip's first and last frames: PSNR / SSIM (uint8 levels, frames 1..T-2)
  against the true middle frames, next to the linear blend of the two end frames, and started from that
  blend instead of noise (SDEdit at ``--blend-strength`` with the end frames known);
- **editing** (SDEdit with the run's prior) of each held-out clip to the next class, (c + 1) mod K, at
  each ``--strengths``: PSNR to the source clip, and which class the result looks like: the nearest
  class centroid of I3D features of ``--num-ref`` real training clips per class (accuracy to the target
  and to the source class) and the FVD to the target class's real clips (the mean over classes of the
  FVD between the edited clips of that target and that class's real clips: few clips per class, so read
  its trend, not its value).

Writes ``<out>/tasks.json`` (every number, with the settings), ``<out>/results.md``, ``<out>/edit_strength.png``
and a filmstrip per task and run (``<out>/<run>_<task>.png``: each generated clip under its real source).
Generated clips are kept under ``runs/tasks/<run>/`` and reused when the script is run again with the same
settings (delete that folder to regenerate).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from vfusion.diffusion.edit import EditTask  # noqa: E402
from vfusion.evaluation.clip_sources import dataset_subsets  # noqa: E402
from vfusion.evaluation.core import quantize  # noqa: E402
from vfusion.evaluation.metrics import frechet_distance_from_features  # noqa: E402
from vfusion.evaluation.motion import clip_motion  # noqa: E402
from vfusion.evaluation.objects import clip_objects  # noqa: E402
from vfusion.inference import tasks  # noqa: E402
from vfusion.inference.generate import load_pipeline  # noqa: E402
from vfusion.rundir import RunDir  # noqa: E402
from vfusion.utils.io import atomic_write_json, atomic_write_text, portable_paths  # noqa: E402
from vfusion.utils.video import filmstrip, write_png  # noqa: E402


def labelled_clips(dataset, indices):
    videos, labels = [], []
    for i in indices:
        item = dataset[int(i)]
        videos.append(item[0])
        labels.append(int(item[1]))
    return torch.stack(videos), torch.tensor(labels)


def per_class_reference(data_cfg, num_classes: int, per_class: int, seed: int = 0):
    """``per_class`` training clips of every class (a seeded order)."""
    from vfusion.data import build_dataset

    dataset = build_dataset(data_cfg, split="train", train=False, seed=seed)
    order = np.random.default_rng(seed).permutation(len(dataset))
    picked: dict[int, list[torch.Tensor]] = {c: [] for c in range(num_classes)}
    for i in order:
        video, label = dataset[int(i)][:2]
        if len(picked[int(label)]) < per_class:
            picked[int(label)].append(video)
        if all(len(v) >= per_class for v in picked.values()):
            break
    return {c: torch.stack(v) for c, v in picked.items()}


def batched(fn, n: int, batch: int, seed: int):
    """``fn(start, stop, generator)`` over batches; batch i seeded ``seed + i``."""
    out = []
    for i, s in enumerate(range(0, n, batch)):
        out.append(fn(s, min(n, s + batch), torch.Generator().manual_seed(seed + i)))
    return torch.cat(out)


def cached(path: Path, settings: dict, make):
    """Videos at ``path`` (.pt) when they were made with ``settings``; else made and saved."""
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file() and json.loads(meta.read_text()) == settings:
        return torch.load(path, weights_only=True)
    videos = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(videos, path)
    atomic_write_json(meta, settings)
    return videos


def psnr_ssim(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean PSNR (dB) and SSIM over frames of clips (N, C, T, H, W) in [-1, 1], on their uint8 levels."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    fa = ((quantize(a) + 1) / 2).permute(0, 2, 1, 3, 4).flatten(0, 1)
    fb = ((quantize(b) + 1) / 2).permute(0, 2, 1, 3, 4).flatten(0, 1)
    psnr = peak_signal_noise_ratio(fa, fb, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(fa, fb, data_range=1.0, reduction="none")
    return float(psnr.mean()), float(ssim.mean())


class Features:
    def __init__(self, device: str):
        from vfusion.evaluation.detectors import load_detectors

        self.det = load_detectors(["fvd"], device=device)

    def __call__(self, videos: torch.Tensor, batch: int = 16) -> np.ndarray:
        out = []
        with torch.no_grad():
            for s in range(0, len(videos), batch):
                out.append(self.det.i3d(quantize(videos[s:s + batch]).to(self.det.device)).cpu().double().numpy())
        return np.concatenate(out)


def fvd(real: np.ndarray, fake: np.ndarray) -> dict:
    return {"fvd": frechet_distance_from_features(real, fake)}


def measure_run(run_dir: Path, args, feats: Features, out: Path) -> dict:
    run = RunDir(run_dir)
    cfg = run.config()
    pipe = load_pipeline(run_dir, args.device)
    vc = pipe.video_config
    k_classes, t = int(vc["num_classes"]), int(vc["num_frames"])
    dataset, (idx,) = dataset_subsets(cfg.data, cfg.eval.get("split") or cfg.data.eval_split, [args.num])
    real, labels = labelled_clips(dataset, idx)
    refs = per_class_reference(cfg.data, k_classes, args.num_ref)
    n, bs = len(real), args.batch
    common = dict(num_inference_steps=args.steps, sampler="ddim", progress=False, output_type="pt")
    name = run_dir.name
    store = Path(args.store) / name
    settings = {"steps": args.steps, "num": args.num, "seed": args.seed, "batch": bs, "run_step": vc["trained"]}
    lam = (vc.get("noise") or {}).get("value")
    print(f"[{name}] {n} held-out clips, lambda={lam}, {args.steps} DDIM steps", flush=True)

    def gen(task_name, fn, extra=None):
        t0 = time.time()
        videos = cached(store / f"{task_name}.pt", {**settings, "task": task_name, **(extra or {})},
                        lambda: batched(fn, n, bs, args.seed))
        print(f"  {task_name}: {time.time() - t0:.0f} s", flush=True)
        return videos

    made = {
        "unconditional": gen("unconditional", lambda s, e, g: pipe(class_labels=labels[s:e], generator=g,
                                                                     **common).frames),
        "i2v_first": gen("i2v_first", lambda s, e, g: tasks.image_to_video(
            pipe, real[s:e, :, 0], at="first", class_labels=labels[s:e], generator=g, **common).frames),
        "interpolation": gen("interpolation", lambda s, e, g: tasks.interpolate(
            pipe, real[s:e, :, 0], real[s:e, :, -1], class_labels=labels[s:e], generator=g, **common).frames),
    }
    w = torch.linspace(0, 1, t).view(1, 1, t, 1, 1)
    blend = (1 - w) * real[:, :, :1] + w * real[:, :, -1:]
    made["interpolation_from_blend"] = gen("interpolation_from_blend", lambda s, e, g: tasks.interpolate(
        pipe, real[s:e, :, 0], real[s:e, :, -1], class_labels=labels[s:e], generator=g,
        tasks=(EditTask(init=blend[s:e], strength=args.blend_strength),), **common).frames,
        {"strength": args.blend_strength})
    if tasks.is_videofusion(pipe):
        made["i2v_keyframe"] = gen("i2v_keyframe", lambda s, e, g: tasks.image_to_video(
            pipe, real[s:e, :, t // 2], at="keyframe", class_labels=labels[s:e], generator=g, **common).frames)
    targets = (labels + 1) % k_classes
    edits = {}
    for strength in args.strengths:
        edits[strength] = gen(f"edit_{strength:g}", lambda s, e, g: tasks.edit(
            pipe, real[s:e], strength=strength, class_labels=targets[s:e], generator=g, **common).frames,
            {"strength": strength})

    print("  I3D features", flush=True)
    real_f = feats(real)
    ref_f = {c: feats(v) for c, v in refs.items()}
    centroids = np.stack([ref_f[c].mean(0) for c in range(k_classes)])
    result = {"run": str(run_dir), "lambda": lam, "lambda_T": (vc.get("noise") or {}).get("value_T"), "model": vc.get("model"), "num_clips": n, "steps": args.steps,
              "trained": vc["trained"]}
    still = {"still_first": real[:, :, :1].expand_as(real).clone()}
    if "i2v_keyframe" in made:
        still["still_keyframe"] = real[:, :, t // 2:t // 2 + 1].expand_as(real).clone()
    for key in ("unconditional", "i2v_first", "i2v_keyframe", "still_first", "still_keyframe"):
        videos = made.get(key, still.get(key))
        if videos is not None:
            result[key] = fvd(real_f, feats(videos))
    class_names = list(getattr(dataset, "class_names", None) or [])
    result["motion"] = {key: motion_numbers(videos, labels, class_names)
                        for key, videos in {"real": real, **made, **still}.items() if not key.startswith("edit")}
    inner = slice(1, t - 1)
    p, s = psnr_ssim(made["interpolation"][:, :, inner], real[:, :, inner])
    fp, fs = psnr_ssim(made["interpolation_from_blend"][:, :, inner], real[:, :, inner])
    bp, bs_ = psnr_ssim(blend[:, :, inner], real[:, :, inner])
    result["interpolation"] = {"psnr": p, "ssim": s, "from_blend_psnr": fp, "from_blend_ssim": fs,
                               "from_blend_strength": args.blend_strength, "blend_psnr": bp, "blend_ssim": bs_}

    def nearest(f):
        d = ((f[:, None, :] - centroids[None]) ** 2).sum(-1)
        return torch.from_numpy(d.argmin(1))

    rows = [{"strength": 0.0, "psnr_source": float("inf"), "acc_target": float((nearest(real_f) == targets)
            .float().mean()), "acc_source": float((nearest(real_f) == labels).float().mean()),
             "fvd_target_class": per_class_fvd(real_f, targets, ref_f)}]
    for strength, videos in edits.items():
        f = feats(videos)
        guess = nearest(f)
        rows.append({"strength": strength, "psnr_source": psnr_ssim(videos, real)[0],
                     "acc_target": float((guess == targets).float().mean()),
                     "acc_source": float((guess == labels).float().mean()),
                     "fvd_target_class": per_class_fvd(f, targets, ref_f)})
    result["edit"] = rows
    result["real_nearest_centroid_accuracy"] = float((nearest(real_f) == labels).float().mean())

    show = slice(0, 4 * 2)  # two clips of each class
    for key, videos in {**made, **{f"edit_{s:g}": v for s, v in edits.items()}}.items():
        pair = torch.stack([real[show], videos[show]], dim=1).flatten(0, 1)  # real row, then generated row
        write_png(out / f"{name}_{key}.png", filmstrip(pair, max_frames=8))
    return result


def motion_numbers(videos: torch.Tensor, labels: torch.Tensor, class_names: list) -> dict:
    """Mean optical flow (pixels per frame) of the clips, and the tracked objects' mean travel and largest
    jump (pixels; the classes with a tracked object only)."""
    objects = clip_objects(videos, labels.tolist(), class_names)
    return {"flow": float(clip_motion(videos).mean()), "object_travel": float(np.nanmean(objects[:, 0])),
            "object_jump": float(np.nanmean(objects[:, 1]))}


def per_class_fvd(feats: np.ndarray, classes: torch.Tensor, ref: dict) -> float:
    values = [frechet_distance_from_features(ref[c], feats[(classes == c).numpy()])
              for c in ref if int((classes == c).sum()) >= 2]
    return float(np.mean(values))


def write_report(results: list[dict], out: Path, command: str) -> None:
    lines = ["# Sora's tasks on the embedded held-out split", "", f"`{command}`", ""]
    def fvd_of(r, key):
        return "-" if key not in r else f"{r[key]['fvd']:.0f}"

    lines += ["FVD against the held-out clips (the still baselines repeat the given frame):", "",
              "| run | λ (t=0 → t=T) | unconditional | i2v keyframe | still keyframe | i2v first frame | "
              "still first frame |", "|---|---|---|---|---|---|---|"]
    for r in results:
        lam = f"{r['lambda']} → {r['lambda_T']}" if r.get("lambda_T") is not None else f"{r['lambda']}"
        lines.append(f"| {Path(r['run']).name} | {lam} | {fvd_of(r, 'unconditional')} | {fvd_of(r, 'i2v_keyframe')} | "
                     f"{fvd_of(r, 'still_keyframe')} | {fvd_of(r, 'i2v_first')} | {fvd_of(r, 'still_first')} |")
    lines += ["", "Interpolation between the first and last frames, PSNR (dB) / SSIM of frames 1..T-2:", "",
              "| run | from noise | from the blend (SDEdit) | linear blend |", "|---|---|---|---|"]
    for r in results:
        ip = r["interpolation"]
        lines.append(f"| {Path(r['run']).name} | {ip['psnr']:.2f} / {ip['ssim']:.3f} | "
                     f"{ip['from_blend_psnr']:.2f} / {ip['from_blend_ssim']:.3f} "
                     f"(strength {ip['from_blend_strength']:g}) | {ip['blend_psnr']:.2f} / {ip['blend_ssim']:.3f} |")
    lines += ["", "Motion: mean optical flow (px/frame) and the tracked objects' travel and largest jump (px):", "",
              "| run | clips | flow | object travel | largest jump |", "|---|---|---|---|---|"]
    for r in results:
        for key, m in r["motion"].items():
            lines.append(f"| {Path(r['run']).name} | {key} | {m['flow']:.2f} | {m['object_travel']:.1f} | "
                         f"{m['object_jump']:.1f} |")
    lines += ["", "Editing to the next class ((c + 1) mod K):", "",
              "| run | strength | PSNR to source | accuracy (target class) | accuracy (source class) | "
              "FVD to target class |", "|---|---|---|---|---|---|"]
    for r in results:
        for e in r["edit"]:
            lines.append(f"| {Path(r['run']).name} | {e['strength']:g} | {e['psnr_source']:.2f} | "
                         f"{e['acc_target']:.2f} | {e['acc_source']:.2f} | {e['fvd_target_class']:.0f} |")
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    plot_edits(results, out / "edit_strength.png")


def plot_edits(results: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    for r in results:
        label = f"{Path(r['run']).name} (λ={r['lambda']})"
        s = [e["strength"] for e in r["edit"]]
        axes[0].plot(s[1:], [e["psnr_source"] for e in r["edit"]][1:], marker="o", label=label)
        axes[1].plot(s, [e["acc_target"] for e in r["edit"]], marker="o", label=label)
        axes[2].plot(s, [e["fvd_target_class"] for e in r["edit"]], marker="o", label=label)
    for ax, title in zip(axes, ("PSNR to the source (dB)", "looks like the target class (accuracy)",
                                "FVD to the target class")):
        ax.set_xlabel("strength")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="append", required=True, help="a trained run directory (repeatable)")
    p.add_argument("--num", type=int, default=32, help="held-out clips")
    p.add_argument("--num-ref", type=int, default=32, help="real training clips per class (class centroids)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--strengths", type=lambda s: [float(v) for v in s.split(",")], default=[0.25, 0.5, 0.75, 1.0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--blend-strength", type=float, default=0.5,
                   help="interpolation from the linear blend: the share of the sampling steps run (SDEdit)")
    p.add_argument("--store", default="runs/tasks", help="where the generated clips are kept")
    p.add_argument("--out", default="experiments/results/tasks")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    feats = Features(args.device)
    results = [measure_run(Path(r), args, feats, out) for r in args.run]
    command = "python experiments/tasks_embedded.py " + " ".join(sys.argv[1:] if argv is None else argv)
    atomic_write_json(out / "tasks.json", portable_paths({"command": command, "results": results,
                                                          "wall_s": round(time.time() - start, 1)}))
    write_report(results, out, command)
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
