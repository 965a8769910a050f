"""CLI: ``vfusion generate``: image-to-video, extension, interpolation and editing from a trained run.

The tasks themselves are :mod:`vfusion.inference.tasks`; this module reads the input files, checks them
against the model (before anything is written), runs the task with a progress bar and writes the
output folder as ``vfusion sample`` does (:func:`vfusion.inference.generate.write_videos`), plus
``inputs.png`` (the given frames) and the ``generate.json`` manifest, written last.

Heavy imports (torch, PIL, the pipeline) stay inside the handler, so ``vfusion --help`` stays light.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
from pathlib import Path

from vfusion.errors import UserError

# the same names as vfusion.inference.tasks.TASKS / I2V_PLACES and pipeline.RESIZE_MODES (those modules
# import torch; a test keeps them in step)
TASK_NAMES = ("i2v", "extend", "interpolate", "edit")
I2V_AT = ("auto", "keyframe", "first")
RESIZE = ("crop", "stretch", "none")
DIRECTIONS = ("forward", "backward")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
MANIFEST = "generate.json"
INPUTS_FILE = "inputs.png"

# the input files each task takes (flag -> attribute of the parsed arguments)
NEEDS = {"i2v": ("image",), "extend": ("video",), "interpolate": ("first", "last"), "edit": ("video",)}
INPUT_FLAGS = ("image", "video", "first", "last")
# the task options that only some tasks take (attribute -> the tasks); unset they are None
TASK_OPTIONS = {"at": ("i2v",), "context": ("extend", "interpolate"), "chunks": ("extend",),
                "direction": ("extend",), "reuse_base": ("extend",), "jumps": ("i2v", "extend", "interpolate"),
                "strength": ("edit",), "inversion": ("edit",)}

DESCRIPTION = """\
Generate videos from given frames with a trained run (or an exported pipeline folder):

  i2v          a clip that contains --image: as VideoFusion's keyframe (the middle frame, T // 2) or
               as the first frame (--at first, any model)
  extend       --video extended by --chunks clips; each new clip starts with the last --context frames
               made so far (--direction backward: ends with the first ones)
  interpolate  the frames between --first and --last
  edit         SDEdit of --video (exactly the model's number of frames) at --strength, towards --class
               or --prompt

Inputs of any size are fitted to the model's frames as training clips are: the center square of
the short side, resized (--resize crop; --resize stretch resizes the whole frame, --resize none
refuses another size). An image (PNG, JPEG, ...) gives one frame; a video (mp4, avi, gif) gives
its frames. For interpolate a --first video gives its last --context frames and a --last video
its first --context frames (default 1).

Writes video_*.mp4 (one per video), videos.npy (the exact uint8 frames, N x T x H x W x C),
grid.gif, filmstrip.png, inputs.png (the given frames, fitted) and generate.json (the task, the
inputs with their original sizes, and the settings; written last) to --out, by default
RUN/generate/TASK (with --pipeline, --out is needed).
"""


def register(sub) -> None:
    from vfusion.diffusion.samplers import sampler_names

    p = sub.add_parser("generate", help="image-to-video, extension, interpolation or editing with a trained run",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run directory (its pipeline/ is used)")
    src.add_argument("--pipeline", metavar="DIR", help="a pipeline folder (model_index.json), instead of --run")
    p.add_argument("--task", required=True, choices=TASK_NAMES, help="what to generate (see above)")
    g = p.add_argument_group("inputs")
    g.add_argument("--image", metavar="PATH", help="i2v: the image (PNG or JPEG)")
    g.add_argument("--video", metavar="PATH", help="extend, edit: the video (mp4, avi or gif; or an image: one frame)")
    g.add_argument("--first", metavar="PATH", help="interpolate: the first frame(s): an image or a video")
    g.add_argument("--last", metavar="PATH", help="interpolate: the last frame(s): an image or a video")
    g.add_argument("--resize", choices=RESIZE, default="crop",
                   help="inputs of another size: crop (default: the center square, resized, as training clips "
                        "are), stretch (the whole frame resized, aspect lost) or none (an error)")
    g = p.add_argument_group("task options")
    g.add_argument("--at", choices=I2V_AT, default=None,
                   help="i2v: where the image goes: keyframe (the middle frame; VideoFusion only), first (frame "
                        "0; any model), auto (default: keyframe for VideoFusion, else first)")
    g.add_argument("--context", type=int, default=None, metavar="K",
                   help="extend: how many given frames start (or end) each new clip (default: half the model's "
                        "clip length); interpolate: how many frames a --first / --last video gives (default 1)")
    g.add_argument("--chunks", type=int, default=None, metavar="N",
                   help="extend: how many clips to add, each adding (frames per clip - K) frames (default 1)")
    g.add_argument("--direction", choices=DIRECTIONS, default=None, help="extend: forward (default) or backward")
    g.add_argument("--reuse-base", action="store_true", default=None,
                   help="extend: every clip keeps the first clip's shared base noise (VideoFusion's decomposed "
                        "noise prior only)")
    g.add_argument("--jumps", type=int, default=None, metavar="J",
                   help="i2v, extend, interpolate: RePaint resampling, J extra passes per step (default 0)")
    g.add_argument("--strength", type=float, default=None, metavar="S",
                   help="edit: how much to change, in [0, 1]: 0 returns the video, 1 ignores it (default 0.5); "
                        "floor(steps x S) steps are run")
    g.add_argument("--inversion", action="store_true", default=None,
                   help="edit: start from the video carried back by DDIM inversion instead of noising it")
    g = p.add_argument_group("sampling")
    g.add_argument("--class", dest="class_", metavar="C", default=None,
                   help="a class index or class name for every video (default: video j gets class j mod K)")
    g.add_argument("--prompt", metavar="P", default=None,
                   help="text for every video (only when the base model is text-conditioned)")
    g.add_argument("--negative-prompt", metavar="P", default=None,
                   help="what classifier-free guidance steers away from (default: the empty prompt)")
    g.add_argument("--num-videos", type=int, default=1, metavar="N",
                   help="how many videos from the same input, in one batch (default 1)")
    g.add_argument("--steps", type=int, default=None, metavar="N",
                   help="sampling steps (default: the run's sample.steps)")
    g.add_argument("--sampler", choices=sampler_names(), default=None, help="default: the run's sample.sampler")
    g.add_argument("--guidance", type=float, default=None, metavar="G",
                   help="classifier-free guidance scale (default: the run's sample.guidance_scale)")
    g.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of the one generator of the batch (default 0)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output folder (default: RUN/generate/TASK; needed with --pipeline)")
    p.add_argument("--device", metavar="D", default=None, help="e.g. cpu or cuda (default: cuda when available)")
    p.set_defaults(func=cmd_generate, on_interrupt="no videos were written: the output folder is as it was")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_arguments(args) -> Path:
    """Everything that can be checked without the model; returns the output folder."""
    task = args.task
    for name in INPUT_FLAGS:
        given = getattr(args, name) is not None
        if name in NEEDS[task] and not given:
            raise UserError(f"--task {task} needs {' and '.join(_flag(n) + ' PATH' for n in NEEDS[task])}; "
                            f"{_flag(name)} is missing")
        if name not in NEEDS[task] and given:
            raise UserError(f"--task {task} takes {' and '.join(_flag(n) for n in NEEDS[task])}, not {_flag(name)}; "
                            f"drop it")
    for name, tasks in TASK_OPTIONS.items():
        if getattr(args, name) is not None and task not in tasks:
            raise UserError(f"{_flag(name)} is an option of --task {' / '.join(tasks)}, not of {task}; drop it")
    for name in NEEDS[task]:
        path = Path(getattr(args, name))
        if not path.is_file():
            raise UserError(f"{_flag(name)} {path}: no such file; give the path of an existing "
                            f"{'image' if name == 'image' else 'video or image'} file")
    if args.strength is not None and not (math.isfinite(args.strength) and 0.0 <= args.strength <= 1.0):
        raise UserError(f"--strength {args.strength} is outside [0, 1] (0 returns the video, 1 ignores it); give a "
                        "value from 0 to 1")
    for name, low in (("num_videos", 1), ("chunks", 1), ("context", 1), ("jumps", 0), ("steps", 1)):
        value = getattr(args, name)
        if value is not None and value < low:
            raise UserError(f"{_flag(name)} is {value}; it must be at least {low}")
    if args.run:
        from vfusion.rundir import RunDir

        out = Path(args.out) if args.out else RunDir(args.run).generate_dir / task
    else:
        if not args.out:
            raise UserError("--pipeline needs --out DIR (where the videos go)")
        out = Path(args.out)
    from vfusion.inference.generate import SAMPLE_FILES, check_output_dir

    return check_output_dir(out, SAMPLE_FILES + (INPUTS_FILE, MANIFEST))


# ---- reading the inputs ------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_stderr_fd():
    """Silence what native decoders (ffmpeg through decord) print on file descriptor 2 while reading."""
    import sys

    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (embedding, some test capture)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def _to_channels(frames, channels: int):
    """uint8 RGB frames (T, H, W, 3) -> (T, H, W, channels): grey levels as PIL's "L" makes them for 1."""
    import numpy as np
    from PIL import Image

    if channels == 3:
        return frames
    return np.stack([np.asarray(Image.fromarray(f).convert("L"))[..., None] for f in frames])


def read_image(path: Path, channels: int, flag: str):
    """An image file -> uint8 (1, H, W, C): RGB, or grey ("L") for a 1-channel model."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            arr = np.array(im.convert("L" if channels == 1 else "RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise UserError(f"{flag} {path}: cannot read it as an image ({_first_line(err)}); give a PNG or JPEG "
                        "file") from None
    return (arr[..., None] if arr.ndim == 2 else arr)[None]


def read_frames(path: Path, channels: int, flag: str):
    """A video file (mp4, avi, gif: every frame) or an image file (one frame) -> uint8 (T, H, W, C)."""
    from vfusion.utils.video import read_video, to_uint8_frames

    if path.suffix.lower() in IMAGE_SUFFIXES:
        return read_image(path, channels, flag)
    try:
        with _quiet_stderr_fd():
            video = read_video(path)
    except Exception as err:  # decoders raise what they like (RuntimeError, DECORDError, OSError ...)
        raise UserError(f"{flag} {path}: cannot read it as a video ({_first_line(err)}); give an mp4, avi or gif "
                        "file, or an image") from None
    if video.dim() != 4 or video.shape[1] == 0:
        raise UserError(f"{flag} {path}: the file holds no frames; give a video with at least one frame")
    return _to_channels(to_uint8_frames(video), channels)  # the file's exact levels


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def fit_size(frames, flag: str, path: Path, shape, resize: str):
    """uint8 (t, H, W, C) frames at the model's size: cropped or stretched by the training transform
    (:func:`vfusion.data.clips.center_crop_resize`), or, with ``--resize none``, refused when another size."""
    from vfusion.data.clips import center_crop_resize

    _, c, _, h, w = shape
    fh, fw = frames.shape[1:3]
    if (fh, fw) == (h, w):
        return frames
    if resize == "none":
        raise UserError(f"{flag} {path} is {fw}x{fh} pixels (width x height) but the model makes {w}x{h} frames; "
                        f"resize it to {w}x{h}, or fit it with --resize crop or --resize stretch")
    return center_crop_resize(frames, h, resize).numpy()


def load_inputs(args, pipe) -> tuple[dict, dict]:
    """The task's input frames, uint8 (t, H, W, C) each, fitted to the model's size and checked against its
    frame counts; and each input's original [height, width]."""
    shape = pipe.pixel_shape(1)
    c, t = shape[1], shape[2]
    if c not in (1, 3):
        raise UserError(f"this model makes {c}-channel frames; image and video files give 1 or 3 channels")
    frames, sizes = {}, {}
    for name in NEEDS[args.task]:
        path, flag = Path(getattr(args, name)), _flag(name)
        x = read_image(path, c, flag) if name == "image" else read_frames(path, c, flag)
        sizes[name] = [int(x.shape[1]), int(x.shape[2])]
        frames[name] = fit_size(x, flag, path, shape, args.resize)
    if args.task == "extend":
        k = args.context
        if not 1 <= k < t:
            raise UserError(f"--context {k}: extension keeps 1 to {t - 1} given frames per new clip (the model makes "
                            f"clips of {t} frames); give a smaller --context")
        n = len(frames["video"])
        if n < k:
            raise UserError(f"--video {args.video} has {n} frame{'s' if n != 1 else ''}, fewer than --context {k}; "
                            f"give a longer video or --context {n}")
    elif args.task == "edit":
        n = len(frames["video"])
        if n != t:
            raise UserError(f"--video {args.video} has {n} frames but an edit takes a clip of exactly the model's "
                            f"{t} frames; cut the video to {t} frames")
    elif args.task == "interpolate":
        k = args.context
        for name, part in (("first", slice(-k, None)), ("last", slice(0, k))):
            x = frames[name]
            if len(x) > 1:  # a video: its last (first) K frames
                if len(x) < k:
                    raise UserError(f"--{name} {getattr(args, name)} has {len(x)} frames, fewer than --context {k}; "
                                    f"give a longer video or a smaller --context")
                frames[name] = x[part]
        a, b = len(frames["first"]), len(frames["last"])
        if a + b >= t:
            raise UserError(f"{a} first + {b} last frames leave nothing to generate in a clip of {t} frames; give a "
                            f"smaller --context (or images)")
    return frames, sizes


def class_labels(pipe, value, n: int):
    """``--class`` (an index or a name) for each of the ``n`` videos, or None (the pipeline's default)."""
    if value is None:
        return None
    vc = pipe.video_config
    k = int(vc.get("num_classes", 0))
    if k == 0:
        raise UserError("this model is unconditional; it takes no --class (drop it)")
    names = [str(s) for s in (vc.get("class_names") or [])]
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < k:
            raise UserError(f"--class {index} is outside 0..{k - 1}; give a class index in that range or a class name")
    elif text in names:
        index = names.index(text)
    elif [s.lower() for s in names].count(text.lower()) == 1:
        index = [s.lower() for s in names].index(text.lower())
    else:
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        raise UserError(f"--class '{text}' is not a class of this model; give an index 0..{k - 1} or one of: "
                        f"{shown or '(the pipeline names no classes)'}")
    return [index] * n


# ---- the command ----------------------------------------------------------------------------------
def cmd_generate(args) -> int:
    import time

    import torch
    from tqdm.auto import tqdm

    from vfusion.data.clips import to_clip
    from vfusion.diffusion.edit import steps_to_run
    from vfusion.inference import tasks
    from vfusion.inference.generate import FRAMES_FILE, load_pipeline, write_videos
    from vfusion.utils.io import atomic_write_json, staged_dir
    from vfusion.utils.video import filmstrip, write_png

    out_dir = check_arguments(args)
    task = args.task
    pipe = load_pipeline(args.run or args.pipeline, args.device)
    vc = pipe.video_config
    t = int(vc["num_frames"])
    if task == "extend" and args.context is None:
        args.context = max(1, t // 2)
    if task == "interpolate" and args.context is None:
        args.context = 1
    frames, sizes = load_inputs(args, pipe)
    n = int(args.num_videos)
    labels = class_labels(pipe, args.class_, n)
    if (args.prompt is not None or args.negative_prompt is not None) and not pipe.text_conditioned:
        raise UserError("this model's base is not text-conditioned, so it takes no --prompt or --negative-prompt; "
                        "choose classes with --class instead")

    # the settings the pipeline resolves from the run's defaults (None: the run's value)
    defaults = pipe.sample_defaults()
    steps = int(args.steps if args.steps is not None else defaults["steps"])
    sampler = args.sampler or defaults["sampler"]
    guidance = float(args.guidance if args.guidance is not None else defaults["guidance_scale"])
    fps = int(defaults["fps"])
    passes = 1 + int(defaults["free_init_iters"])
    settings = {"num_videos": n, "sampler": sampler, "steps": steps, "guidance_scale": guidance, "seed": args.seed}
    if args.prompt is not None:
        settings["prompt"] = args.prompt
    if args.negative_prompt is not None:
        settings["negative_prompt"] = args.negative_prompt
    if args.class_ is not None:
        settings["class"] = labels[0]

    x = {name: to_clip(f) for name, f in frames.items()}  # (C, t, H, W) in [-1, 1], as training clips
    device = pipe.device
    call = dict(batch_size=n, class_labels=labels, prompt=args.prompt, negative_prompt=args.negative_prompt,
                num_inference_steps=args.steps,
                sampler=args.sampler, guidance_scale=args.guidance,
                generator=torch.Generator(device=device).manual_seed(int(args.seed)), output_type="pt",
                progress=False)
    if task == "i2v":
        at, index = tasks.image_place(pipe, args.at or "auto")
        jumps = int(args.jumps or 0)
        settings.update(at=at, keyframe_index=index, resample_jumps=jumps)
        total = passes * steps
        fn, task_args = tasks.image_to_video, dict(image=x["image"][:, 0], at=at, resample_jumps=jumps)
        given = x["image"]
    elif task == "extend":
        chunks, direction = int(args.chunks or 1), args.direction or "forward"
        jumps = int(args.jumps or 0)
        settings.update(context=args.context, chunks=chunks, direction=direction, reuse_base=bool(args.reuse_base),
                        resample_jumps=jumps)
        total = chunks * passes * steps
        fn, task_args = tasks.extend, dict(video=x["video"], context=args.context, direction=direction, chunks=chunks,
                                           reuse_base=bool(args.reuse_base), resample_jumps=jumps)
        given = x["video"]
    elif task == "interpolate":
        jumps = int(args.jumps or 0)
        settings.update(context=args.context, resample_jumps=jumps)
        total = passes * steps
        fn, task_args = tasks.interpolate, dict(first=x["first"].unsqueeze(0), last=x["last"].unsqueeze(0),
                                                resample_jumps=jumps)  # clips (1, C, t, H, W)
        given = torch.cat([x["first"], x["last"]], dim=1)
    else:
        strength = 0.5 if args.strength is None else float(args.strength)
        inversion = bool(args.inversion)
        settings.update(strength=strength, inversion=inversion, steps_run=steps_to_run(steps, strength))
        total = steps_to_run(steps, strength)
        fn, task_args = tasks.edit, dict(video=x["video"], strength=strength, inversion=inversion)
        given = x["video"]

    start = time.perf_counter()
    bars = []  # drawn at the first step, so that an error raised before sampling stays one line

    def step(_index):
        if not bars:
            bars.append(tqdm(total=total, desc=f"{task}: {n} video{'s' if n != 1 else ''} ({sampler})", unit="step"))
        bars[0].update(1)

    call["callback"] = step
    try:
        out = fn(pipe, **task_args, **call)
    except BaseException:
        for bar in bars:
            bar.leave = False  # no half-drawn bar left above the error
        raise
    finally:
        for bar in bars:
            bar.close()
    videos = out.frames
    made_labels = out.class_labels.tolist() if out.class_labels is not None else None

    # everything was checked and generated: now write, replacing an earlier generation whole
    with staged_dir(out_dir) as tmp:
        paths = write_videos(tmp, videos, fps=fps, labels=made_labels)
        write_png(tmp / INPUTS_FILE, filmstrip(given.unsqueeze(0), max_frames=16))
        secs = time.perf_counter() - start
        source = {"run": str(Path(args.run).resolve())} if args.run else \
            {"pipeline": str(Path(args.pipeline).resolve())}
        atomic_write_json(tmp / MANIFEST, {
            "task": task, **source, "model": vc.get("model"),
            "inputs": {name: str(Path(getattr(args, name)).resolve()) for name in NEEDS[task]},
            "input_frames": {name: int(f.shape[0]) for name, f in frames.items()},  # the frames used of each
            "input_size": sizes, "resize": args.resize,  # each input's [height, width] before it was fitted
            **settings, "labels": made_labels, "num_frames": int(videos.shape[2]),
            "frames_file": FRAMES_FILE, "videos": [p.name for p in paths], "fps": fps,
            "seconds": round(secs, 3)})
    print(f"wrote {len(paths)} video{'s' if len(paths) != 1 else ''} of {videos.shape[2]} frames, videos.npy, "
          f"grid.gif, filmstrip.png, inputs.png and {MANIFEST} to {out_dir} in {secs:.1f}s")
    return 0

