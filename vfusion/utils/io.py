"""Atomic file writes and environment capture.

Every file the project writes that a later step reads (checkpoints, configs,
metrics, caches) goes through a temporary file in the same folder and an
``os.replace``, so an interrupted write never leaves a half-written file behind
and never destroys the previous version.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the temporary name keeps the real extension (writers such as ffmpeg pick the format from it)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def portable_paths(obj: Any, base: str | Path | None = None) -> Any:
    """A record with its absolute paths made machine-neutral, so a committed result names no one's disk:
    paths under ``base`` (default: the working directory) relative to it, paths under the home directory
    as ``~/...``; other values unchanged."""
    base = Path(base or os.getcwd()).resolve()
    home = Path.home().resolve()
    if isinstance(obj, dict):
        return {k: portable_paths(v, base) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(portable_paths(v, base) for v in obj)
    if isinstance(obj, str) and obj.startswith("/") and "\n" not in obj:
        path = Path(obj)
        for root, prefix in ((base, None), (home, "~")):
            if path == root or root in path.parents:
                rel = path.relative_to(root).as_posix()
                return (rel or ".") if prefix is None else f"{prefix}/{rel}"
    return obj


def replace_dir(tmp: Path, out_dir: Path) -> None:
    """Put the finished folder ``tmp`` in place of ``out_dir`` (the old one is removed only after)."""
    import shutil

    old = out_dir.with_name(out_dir.name + ".old")
    if out_dir.exists():
        shutil.rmtree(old, ignore_errors=True)
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


STAGING_MARK = ".partial-"


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


@contextmanager
def staged_dir(out_dir: str | Path) -> Iterator[Path]:
    """Yield an empty hidden folder beside ``out_dir`` to write an output folder into; when the block
    finishes it replaces ``out_dir`` whole, and when it fails or is interrupted it is removed. So a
    folder at ``out_dir`` is always a finished one. A staging folder left by a killed writer (its
    process gone) is removed by the next writer of the same folder."""
    import shutil

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{out_dir.name}{STAGING_MARK}"
    for stale in out_dir.parent.glob(prefix + "*"):
        if not _alive(stale.name[len(prefix):]):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = out_dir.with_name(f"{prefix}{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def git_sha(cwd: str | Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        sha = out.stdout.strip()
        if out.returncode != 0 or not sha:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info() -> dict:
    """Git SHA, Python, platform, device and the versions of the packages that matter."""
    from importlib import metadata

    versions = {}
    for pkg in ("vfusion", "torch", "diffusers", "lightning", "torchmetrics", "decord", "omegaconf", "numpy", "av"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    info = {
        "git_sha": git_sha(Path(__file__).resolve().parent),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "argv": sys.argv,
        "packages": versions,
    }
    try:
        import torch

        info["cuda"] = torch.version.cuda
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cpu_threads"] = torch.get_num_threads()
    except Exception:  # pragma: no cover - torch always present in practice
        pass
    return info
