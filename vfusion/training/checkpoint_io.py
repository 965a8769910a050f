"""Checkpoints written atomically: a temporary file in the same folder, then ``os.replace``.

An interrupted save never leaves a truncated ``last.ckpt`` and never destroys the
previous one. After a step checkpoint (``step<N>.ckpt``) is on disk, the step
checkpoints beyond the last ``keep_step_checkpoints`` (by step) are deleted; ``last.ckpt``
and any other file are never touched. The rotation looks at the files in the folder, not
at Lightning's ``ModelCheckpoint`` bookkeeping, so it also holds when a run is resumed
with another ``train.keep_checkpoints``, from a moved run directory, or after a crash.
Lightning calls the checkpoint IO on global rank 0 only.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Optional

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from vfusion.utils.io import atomic_torch_save

log = logging.getLogger(__name__)

# ModelCheckpoint(filename="step{step:07d}") names, with Lightning's version suffix on a name clash
STEP_CHECKPOINT = re.compile(r"^step(\d+)(?:-v(\d+))?\.ckpt$")


def step_checkpoints(folder: str | Path) -> list[Path]:
    """The step checkpoints in ``folder``, oldest step first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = STEP_CHECKPOINT.match(p.name)
        if m and p.is_file():
            found.append(((int(m.group(1)), int(m.group(2) or 0)), p))
    return [p for _, p in sorted(found)]


def prune_step_checkpoints(folder: str | Path, keep: int) -> list[Path]:
    """Delete all but the last ``keep`` step checkpoints of ``folder``; the deleted paths."""
    if keep < 1:
        raise ValueError(f"keep={keep}: keep at least one step checkpoint")
    old = step_checkpoints(folder)[:-keep]
    for p in old:
        p.unlink(missing_ok=True)
    return old


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files an interrupted atomic write left in ``folder`` (``.<name>.*.tmp*``).

    Only safe while no other process writes there: ``fit`` calls it holding the run lock."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(".*.tmp*") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        log.warning("removed %d temporary file(s) an interrupted checkpoint write left in %s: %s", len(stale), folder,
                    ", ".join(p.name for p in stale))
    return stale


class AtomicCheckpointIO(TorchCheckpointIO):
    def __init__(self, keep_step_checkpoints: Optional[int] = None):
        super().__init__()
        self.keep_step_checkpoints = keep_step_checkpoints

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        atomic_torch_save(checkpoint, path)
        if self.keep_step_checkpoints and STEP_CHECKPOINT.match(Path(path).name):
            prune_step_checkpoints(Path(path).parent, self.keep_step_checkpoints)
