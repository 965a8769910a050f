"""Third-party notices a normal ``vfusion`` command should not print (installed by the CLI only; library
users keep every warning). Each entry says why it is noise here."""

from __future__ import annotations

import logging
import os
import warnings

# (logger name, message start): messages of other packages' loggers that carry no information for a run
QUIET_LOGS = (
    ("lightning.pytorch.utilities.rank_zero", "💡 Tip"),  # an advertisement for a cloud logger
    # `trainer.save_checkpoint` without `weights_only` means "keep the optimizer state" (what resuming needs),
    # not an unsafe load: vfusion reads every checkpoint with torch.load(..., weights_only=True)
    ("lightning.pytorch.trainer.connectors.checkpoint_connector", "`weights_only` was not set"),
)
QUIET_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)",          # Lightning's own use of a torch API deprecated in torch 2.13
    r"Checkpoint directory .* exists and is not empty",  # expected when a run is resumed
)


# environment switches read when those packages are imported (set only where the user has not)
QUIET_ENV = {
    # per-file "Loading weights" / "Writing model shards" bars of tiny component folders: the project's own
    # bars report the work that takes time
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    # transformers' import-time advisories (e.g. "CLIPImageProcessor requires torchvision", an image
    # processor vfusion never uses); its errors still print
    "TRANSFORMERS_VERBOSITY": "error",
}


class _Drop(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefix)


def quiet_third_party() -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name, prefix in QUIET_LOGS:
        logging.getLogger(name).addFilter(_Drop(prefix))
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
