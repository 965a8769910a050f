"""The embedded default dataset: procedural videos written in the UCF-101 layout, so nothing is downloaded.

Every clip is rendered with numpy from ``(data.embedded_seed, class, clip)`` and written as XviD AVI (PyAV, 25 fps),
so training reads it through the real UCF-101 loader: ``<root>/UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` (4 clips
per group), ``<root>/ucfTrainTestlist/`` (``classInd.txt``, ``trainlist0{1,2,3}.txt``, ``testlist0{1,2,3}.txt``)
and ``<root>/embedded.json`` (the generator parameters, and the marker that the dataset is there).

Content is smooth and low-frequency (soft-edged shapes over slowly drifting sinusoidal textures), so a tiny model
at 32x32 can learn it, and every class has its own motion and palette (``CLASSES``, in the order more classes are
taken: a ball reflecting off the walls, a pendulum's harmonic swing, clouds drifting across a brightening sky, a
moon circling a planet, ...). Fold ``f``'s test list holds the clips ``[(f-1)*n_test, f*n_test)`` (mod the clips
per class) of every class, the train list the rest; fold 1's test split is ``embedded_test_per_class`` clips.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vfusion.data.errors import DatasetError

GENERATOR_VERSION = 1
CLIPS_PER_GROUP = 4
FPS = 25


# --- drawing helpers (all arrays are float in [0, 1]; coordinates are fractions of the frame) ----
def _grid(size: int, length: int):
    c = (np.arange(size) + 0.5) / size
    return c[None, None, :], c[None, :, None], np.arange(length, dtype=np.float64)[:, None, None]  # x, y, t


def _texture(rng, x, y, t, c0, c1, drift: float = 0.01) -> np.ndarray:
    """Two low-frequency sinusoids drifting over time, blended between colours c0 and c1."""
    tex = 0.0
    for _ in range(2):
        ang = rng.uniform(0, 2 * np.pi)
        freq = rng.uniform(0.6, 1.4)
        vel = rng.uniform(-1, 1) * drift * 2 * np.pi * 6
        tex = tex + np.sin(2 * np.pi * freq * (x * np.cos(ang) + y * np.sin(ang)) + vel * t + rng.uniform(0, 2 * np.pi))
    w = (0.5 + 0.25 * tex)[..., None]                                  # (T, H, W, 1)
    return np.asarray(c0) * (1 - w) + np.asarray(c1) * w


def _jitter(rng, color, amount: float = 0.06) -> np.ndarray:
    return np.clip(np.asarray(color, dtype=np.float64) + rng.uniform(-amount, amount, 3), 0, 1)


def _disk(x, y, cx, cy, r, soft: float = 0.03) -> np.ndarray:
    d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    return np.clip((r - d) / soft + 0.5, 0, 1)[..., None]


def _paint(img, mask, color) -> np.ndarray:
    return img * (1 - mask) + np.asarray(color) * mask


def _reflect(p, lo, hi):
    z = np.mod((p - lo) / (hi - lo), 2.0)
    return lo + (hi - lo) * np.where(z > 1, 2 - z, z)


def _segment_distance(x, y, ax, ay, bx, by):
    vx, vy = bx - ax, by - ay
    s = np.clip(((x - ax) * vx + (y - ay) * vy) / (vx ** 2 + vy ** 2 + 1e-9), 0, 1)
    return np.sqrt((x - ax - s * vx) ** 2 + (y - ay - s * vy) ** 2)


# --- the classes: each returns the clip (T, H, W, 3) and its caption, made from the drawn parameters ---
_WORDS = {3: "three", 4: "four", 5: "five", 6: "six"}


def _bouncing_ball(rng, x, y, t):
    img = _texture(rng, x, y, t, _jitter(rng, (0.85, 0.80, 0.70)), _jitter(rng, (0.60, 0.55, 0.50)))
    r = rng.uniform(0.11, 0.15)
    speed, ang = rng.uniform(0.025, 0.04), rng.uniform(0, 2 * np.pi)
    cx = _reflect(rng.uniform(r, 1 - r) + speed * np.cos(ang) * t, r, 1 - r)
    cy = _reflect(rng.uniform(r, 1 - r) + speed * np.sin(ang) * t, r, 1 - r)
    side = "right" if np.cos(ang) > 0 else "left"
    caption = f"a red ball bouncing to the {side}, {'fast' if speed > 0.0325 else 'slowly'}"
    return _paint(img, _disk(x, y, cx, cy, r), _jitter(rng, (0.85, 0.15, 0.15), 0.1)), caption


def _swinging_pendulum(rng, x, y, t):
    img = _texture(rng, x, y, t, _jitter(rng, (0.55, 0.62, 0.75)), _jitter(rng, (0.35, 0.40, 0.55)))
    px, py, length = 0.5 + rng.uniform(-0.08, 0.08), 0.08, rng.uniform(0.5, 0.62)
    amplitude, period = rng.uniform(0.5, 0.9), rng.uniform(16, 26)
    theta = amplitude * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    bx, by = px + length * np.sin(theta), py + length * np.cos(theta)
    rod = np.clip((0.018 - _segment_distance(x, y, px, py, bx, by)) / 0.02 + 0.5, 0, 1)[..., None]
    img = _paint(img, rod, (0.15, 0.12, 0.10))
    reach, pace = "widely" if amplitude > 0.7 else "gently", "fast" if period < 21 else "slowly"
    caption = f"a yellow pendulum swinging {reach}, {pace}"
    return _paint(img, _disk(x, y, bx, by, rng.uniform(0.08, 0.1)), _jitter(rng, (0.95, 0.80, 0.20), 0.08)), caption


def _drifting_clouds(rng, x, y, t):
    top, bottom = _jitter(rng, (0.15, 0.35, 0.75)), _jitter(rng, (0.60, 0.78, 0.95))
    light = 1 + 0.15 * np.sin(2 * np.pi * t / 80 + rng.uniform(0, 2 * np.pi))[..., None]
    img = np.clip((top * (1 - y[..., None]) + bottom * y[..., None]) * light, 0, 1) * np.ones_like(x)[..., None]
    wind = rng.choice([-1, 1]) * rng.uniform(0.012, 0.025)
    for _ in range(rng.integers(3, 6)):
        cx, cy = rng.uniform(0, 1), rng.uniform(0.15, 0.65)
        sx = rng.uniform(0.10, 0.18) * (1 + 0.15 * np.sin(2 * np.pi * t / rng.uniform(30, 60)))
        sy = rng.uniform(0.05, 0.09)
        dx = np.mod(x - cx - wind * t + 0.5, 1.0) - 0.5                # wraps around horizontally
        mask = np.exp(-0.5 * ((dx / sx) ** 2 + ((y - cy) / sy) ** 2))[..., None]
        img = _paint(img, 0.9 * mask, (0.97, 0.97, 0.97))
    return img, f"white clouds drifting to the {'right' if wind > 0 else 'left'} across a blue sky"


def _orbiting_moon(rng, x, y, t):
    img = _texture(rng, x, y, t, _jitter(rng, (0.05, 0.05, 0.15)), _jitter(rng, (0.15, 0.10, 0.25)), drift=0.005)
    cx, cy = 0.5 + rng.uniform(-0.05, 0.05, 2)
    img = _paint(img, _disk(x, y, cx, cy, rng.uniform(0.12, 0.15)), _jitter(rng, (0.95, 0.55, 0.15)))
    omega = rng.choice([-1, 1]) * 2 * np.pi / rng.uniform(20, 32)
    phase, rx, ry = rng.uniform(0, 2 * np.pi), rng.uniform(0.28, 0.34), rng.uniform(0.18, 0.32)
    mx, my = cx + rx * np.cos(omega * t + phase), cy + ry * np.sin(omega * t + phase)
    # y grows downwards, so a growing angle turns clockwise on screen
    caption = f"a grey moon circling an orange planet {'clockwise' if omega > 0 else 'counterclockwise'}"
    return _paint(img, _disk(x, y, mx, my, rng.uniform(0.06, 0.075)), _jitter(rng, (0.85, 0.85, 0.90))), caption


def _pulsing_lantern(rng, x, y, t):
    img = _texture(rng, x, y, t, _jitter(rng, (0.10, 0.08, 0.05)), _jitter(rng, (0.25, 0.18, 0.10)), drift=0.004)
    period, phase = rng.uniform(14, 24), rng.uniform(0, 2 * np.pi)
    r = rng.uniform(0.2, 0.25) + 0.08 * np.sin(2 * np.pi * t / period + phase)
    hue = 0.5 + 0.5 * np.sin(2 * np.pi * t / (2 * period) + phase)[..., None]
    color = (1 - hue) * np.array([1.0, 0.85, 0.3]) + hue * np.array([1.0, 0.35, 0.25])
    cx, cy = 0.5 + rng.uniform(-0.08, 0.08, 2)
    caption = f"a glowing lantern pulsing {'quickly' if period < 19 else 'slowly'} in the dark"
    return _paint(img, _disk(x, y, cx, cy, r, soft=0.08), color), caption


def _sliding_stripes(rng, x, y, t):
    ang, freq = rng.uniform(0, 2 * np.pi), rng.uniform(1.5, 2.5)
    speed = rng.uniform(0.03, 0.05) * 2 * np.pi * freq
    w = (0.5 + 0.5 * np.sin(2 * np.pi * freq * (x * np.cos(ang) + y * np.sin(ang)) - speed * t))[..., None]
    # the pattern travels along (cos ang, sin ang); y grows downwards
    dx, dy = np.cos(ang), np.sin(ang)
    way = ("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else ("down" if dy > 0 else "up")
    video = _jitter(rng, (0.20, 0.60, 0.30)) * (1 - w) + _jitter(rng, (0.55, 0.25, 0.60)) * w
    return video, f"green and purple stripes sliding {way}"


def _rising_bubbles(rng, x, y, t):
    img = _texture(rng, x, y, t, _jitter(rng, (0.05, 0.40, 0.45)), _jitter(rng, (0.10, 0.25, 0.35)))
    count = rng.integers(4, 7)
    for _ in range(count):
        speed, x0, y0 = rng.uniform(0.015, 0.035), rng.uniform(0.15, 0.85), rng.uniform(0, 1)
        by = np.mod(y0 - speed * t, 1.2) - 0.1
        bx = x0 + 0.04 * np.sin(2 * np.pi * t / rng.uniform(10, 20) + rng.uniform(0, 2 * np.pi))
        img = _paint(img, 0.8 * _disk(x, y, bx, by, rng.uniform(0.04, 0.07)), (0.85, 0.95, 1.0))
    return img, f"{_WORDS[count]} bubbles rising through teal water"


def _spinning_wheel(rng, x, y, t):
    img = _texture(rng, x, y, t, _jitter(rng, (0.80, 0.80, 0.82)), _jitter(rng, (0.65, 0.68, 0.70)))
    cx, cy = 0.5 + rng.uniform(-0.06, 0.06, 2)
    spokes, omega = rng.integers(3, 6), rng.choice([-1, 1]) * rng.uniform(0.08, 0.16)
    angle = np.arctan2(y - cy, x - cx)
    pattern = (0.5 + 0.5 * np.cos(spokes * (angle - omega * t)))[..., None]
    color = pattern * _jitter(rng, (0.10, 0.20, 0.60)) + (1 - pattern) * _jitter(rng, (0.90, 0.90, 0.30))
    caption = f"a wheel with {_WORDS[spokes]} spokes spinning {'clockwise' if omega > 0 else 'counterclockwise'}"
    return _paint(img, _disk(x, y, cx, cy, rng.uniform(0.3, 0.36)), color), caption


CLASSES: dict[str, Callable] = {
    "BouncingBall": _bouncing_ball, "SwingingPendulum": _swinging_pendulum, "DriftingClouds": _drifting_clouds,
    "OrbitingMoon": _orbiting_moon, "PulsingLantern": _pulsing_lantern, "SlidingStripes": _sliding_stripes,
    "RisingBubbles": _rising_bubbles, "SpinningWheel": _spinning_wheel,
}


def class_names(num_classes: int) -> list[str]:
    if not 1 <= num_classes <= len(CLASSES):
        raise DatasetError(f"data.embedded_num_classes is {num_classes}; the embedded generator has 1..{len(CLASSES)} "
                           f"classes ({', '.join(CLASSES)})")
    return list(CLASSES)[:num_classes]


def render_clip(class_name: str, seed: int, clip: int, size: int = 64, length: int = 40,
                class_index: int | None = None) -> np.ndarray:
    """One clip ``(length, size, size, 3)`` uint8, a pure function of its arguments."""
    video, _ = _draw(class_name, seed, clip, size, length, class_index)
    return np.round(np.clip(video * np.ones((length, size, size, 1)), 0, 1) * 255).astype(np.uint8)


def clip_caption(class_name: str, seed: int, clip: int, class_index: int | None = None) -> str:
    """The caption of a clip, from the same parameters its pixels are drawn from (the frame size and length do
    not change what is drawn, so a 2x2 two-frame rendering is enough)."""
    return _draw(class_name, seed, clip, 2, 2, class_index)[1]


def _draw(class_name: str, seed: int, clip: int, size: int, length: int, class_index: int | None):
    """``(clip, caption)`` of a class's renderer; its random stream is keyed by the class's index."""
    index = list(CLASSES).index(class_name) if class_index is None else class_index
    rng = np.random.default_rng([GENERATOR_VERSION, seed, index, clip])
    x, y, t = _grid(size, length)
    return CLASSES[class_name](rng, x, y, t)


# --- writing ---------------------------------------------------------------------------------
def write_xvid_avi(path: str | Path, frames: np.ndarray, fps: int = FPS, quality: int = 2, gop: int = 12) -> None:
    """``(T, H, W, 3)`` uint8 RGB -> an MPEG-4 Part 2 AVI tagged XVID (as UCF-101), fixed quantiser."""
    import av

    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"XviD needs even frame sizes, got {w}x{h}")
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.codec_tag = "XVID"
        stream.codec_context.gop_size = gop
        stream.codec_context.thread_count = 1
        stream.codec_context.options = {"flags": "+qscale", "global_quality": str(quality * 118)}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def clip_name(class_name: str, clip: int) -> str:
    group, number = divmod(clip, CLIPS_PER_GROUP)
    return f"v_{class_name}_g{group + 1:02d}_c{number + 1:02d}.avi"


def generator_params(data_cfg: Any) -> dict:
    return {
        "generator_version": GENERATOR_VERSION, "num_classes": int(data_cfg.embedded_num_classes),
        "train_per_class": int(data_cfg.embedded_train_per_class), "test_per_class": int(data_cfg.embedded_test_per_class),
        "size": int(data_cfg.embedded_size), "length": int(data_cfg.embedded_length), "seed": int(data_cfg.embedded_seed),
        "fps": FPS,
    }


def _check_params(p: dict) -> None:
    class_names(p["num_classes"])
    if p["train_per_class"] < 1 or p["test_per_class"] < 1:
        raise DatasetError("data.embedded_train_per_class and data.embedded_test_per_class must be >= 1")
    if p["size"] < 16 or p["size"] % 2:
        raise DatasetError(f"data.embedded_size is {p['size']}; it must be even and >= 16")
    if p["length"] < 1:
        raise DatasetError("data.embedded_length must be >= 1")


def _check_decodable(size: int) -> None:
    """Before generating: the videos must come back from decord at their size."""
    if not _decodes(size):
        near = next(n for k in range(2, 4096, 2) for n in (size - k, size + k) if n >= 16 and _decodes(n))
        raise DatasetError(f"data.embedded_size is {size}: decord reads XviD videos of that size back with the "
                           f"wrong shape (a decord bug at some sizes, e.g. 16, 24 and 48); use another size, e.g. {near}")


def _decodes(size: int) -> bool:
    """Whether decord reads a two-frame XviD video of ``size`` x ``size`` back as (2, size, size, 3)."""
    import tempfile

    import decord

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.avi"
        write_xvid_avi(path, np.zeros((2, size, size, 3), dtype=np.uint8))
        try:
            shape = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1).get_batch([0, 1]).shape
        except Exception:  # noqa: BLE001 - decord raises its own error types on these sizes
            return False
    return tuple(shape) == (2, size, size, 3)


def _write_clip(job) -> None:
    name, class_index, clip, path, params = job
    frames = render_clip(name, params["seed"], clip, params["size"], params["length"], class_index=class_index)
    write_xvid_avi(path, frames, fps=params["fps"])


def write_embedded(folder: str | Path, params: dict, progress: bool = True) -> None:
    """Render and write the whole dataset into ``folder`` (which must not exist yet)."""
    folder = Path(folder)
    names = class_names(params["num_classes"])
    n_train, n_test = params["train_per_class"], params["test_per_class"]
    total = n_train + n_test
    videos, splits = folder / "UCF-101", folder / "ucfTrainTestlist"
    splits.mkdir(parents=True)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total * len(names), desc="generating the embedded dataset", unit="clip")
    jobs = []
    for ci, name in enumerate(names):
        (videos / name).mkdir(parents=True)
        jobs += [(name, ci, j, videos / name / clip_name(name, j), params) for j in range(total)]
    workers = min(2, os.cpu_count() or 1) if len(jobs) >= 32 else 1   # each clip is independent of the others
    with (ProcessPoolExecutor(workers) if workers > 1 else nullcontext()) as pool:
        for _ in (pool.map(_write_clip, jobs, chunksize=8) if pool else map(_write_clip, jobs)):
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    (splits / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
    for fold in (1, 2, 3):
        test_ids = {((fold - 1) * n_test + k) % total for k in range(n_test)}
        train_lines, test_lines = [], []
        for ci, name in enumerate(names):
            for j in range(total):
                rel = f"{name}/{clip_name(name, j)}"
                if j in test_ids:
                    test_lines.append(f"{rel}\n")
                else:
                    train_lines.append(f"{rel} {ci + 1}\n")
        (splits / f"trainlist0{fold}.txt").write_text("".join(train_lines))
        (splits / f"testlist0{fold}.txt").write_text("".join(test_lines))
    (folder / "embedded.json").write_text(json.dumps(params, indent=2) + "\n")


def ensure_embedded(data_cfg: Any, progress: bool = True) -> Path:
    """The embedded dataset at ``data.root``, generated (atomically) if absent or made with other parameters."""
    root = Path(data_cfg.root).expanduser()
    params = generator_params(data_cfg)
    _check_params(params)
    marker = root / "embedded.json"
    try:
        if json.loads(marker.read_text()) == params:
            return root
    except (OSError, ValueError):
        pass
    if root.exists() and not marker.is_file() and any(root.iterdir()):
        raise DatasetError(f"data.root '{root}' exists, is not empty and holds no embedded.json: it is not an embedded "
                           f"dataset, so it is left alone; point data.root at an empty or new folder")
    _check_decodable(params["size"])
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write_embedded(tmp, params, progress=progress)
        old = root.parent / f".{root.name}.old-{os.getpid()}"
        if root.exists():
            os.rename(root, old)
        try:
            os.rename(tmp, root)
        except OSError:             # another process wrote it meanwhile; theirs is as good as ours
            if not marker.is_file():
                raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def list_from_config(data_cfg: Any, split: str):
    """The registry's listing function for ``data.dataset=embedded``: generate the dataset at
    ``data.root`` if needed, then list it in the UCF-101 layout."""
    from vfusion.data.ucf101 import list_ucf101

    root = ensure_embedded(data_cfg)
    return list_ucf101(root, split, int(data_cfg.fold), strict=bool(data_cfg.strict), dataset="embedded")


def caption_lookup(params: dict, names: list[str]):
    """``item -> (caption, None)`` for the clips of an embedded dataset made with ``params``: the clip each
    listed file is, by the names :func:`clip_name` gives them."""
    clips = {f"{name}/{clip_name(name, j)}": (name, ci, j) for ci, name in enumerate(names)
             for j in range(params["train_per_class"] + params["test_per_class"])}

    def caption_of(item):
        key = "/".join(item.key.split("/")[-2:])
        if key not in clips:
            return None, f"'{item.key}' is not a clip the embedded generator names"
        name, index, clip = clips[key]
        return clip_caption(name, params["seed"], clip, class_index=index), None

    return caption_of


def list_captioned_from_config(data_cfg: Any, split: str):
    """The registry's listing function for ``data.dataset=embedded_text``: the embedded clips, each with the
    caption of its own drawn parameters (e.g. "a red ball bouncing to the left, fast")."""
    return with_captions(list_from_config(data_cfg, split), generator_params(data_cfg))


def with_captions(listing, params: dict):
    """An embedded listing made with generator ``params``, each clip given its caption."""
    from vfusion.data.captions import apply_captions

    listing = apply_captions(listing, caption_lookup(params, class_names(params["num_classes"])), "error",
                             "regenerate the embedded dataset (delete data.root)")
    listing.dataset = "embedded_text"
    return listing
