"""One sha256 for a model folder's weights, recorded beside the numbers a model produced."""

from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin")


def weights_sha256(folder: str | Path) -> str:
    """sha256 over the folder's weight files (``*.safetensors``, ``*.bin``) in name order, each name then its bytes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
