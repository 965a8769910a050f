"""Checkpoints written atomically: a temporary file in the same folder, then ``os.replace``.

An interrupted save never leaves a truncated ``last.ckpt`` and never destroys the
previous one.
"""

from __future__ import annotations

from typing import Any, Optional

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from vfusion.utils.io import atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        atomic_torch_save(checkpoint, path)
