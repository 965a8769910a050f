"""Re-captioning: sidecar ``NAME.txt`` captions written by an image-to-text model (``vfusion data caption``).

Every video under the root (the folder layout, any depth) gets the caption a transformers image-to-text
folder (e.g. BLIP: ``BlipForConditionalGeneration`` + ``BlipProcessor``) generates, greedily, for its
keyframe (the middle frame, ``T // 2``, the frame VideoFusion's base generator sees), or for ``frames``
evenly spaced frames whose distinct captions are joined with "; ". The caption goes into ``NAME.txt``
beside the video, the sidecar the ``captions`` dataset reads.

An existing sidecar is kept unless ``overwrite`` is set, and each sidecar is written (atomically) as soon
as its caption is made, so an interrupted run resumes where it stopped. A video that cannot be read, or
whose caption comes out empty, gets no sidecar and is counted. ``captions_report.json`` in the root says
what was written, kept and failed, with the model (path, sha256 of its weights) and the settings.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from vfusion.errors import UserError

REPORT = "captions_report.json"


def frame_indices(length: int, frames: int) -> list[int]:
    """The keyframe ``length // 2`` for one frame; else ``frames`` evenly spaced indices (centres of equal parts)."""
    if frames == 1:
        return [length // 2]
    return sorted({min(length - 1, int((k + 0.5) * length / frames)) for k in range(frames)})


class Captioner:
    """A transformers image-to-text model and its processor, captioning RGB frames greedily."""

    def __init__(self, folder: str | Path, max_new_tokens: int = 30, device: Optional[str] = None):
        import json

        import torch
        import transformers

        self.folder = Path(folder)
        config = self.folder / "config.json"
        if not config.is_file():
            raise UserError(f"--model {self.folder} is not a transformers model folder (no config.json); save an "
                            f"image-to-text model (e.g. BlipForConditionalGeneration) and its processor there")
        names = json.loads(config.read_text()).get("architectures") or []
        cls = next((getattr(transformers, n) for n in names if hasattr(transformers, n)),
                   getattr(transformers, "AutoModelForImageTextToText"))
        try:
            self.model = cls.from_pretrained(str(self.folder)).eval().requires_grad_(False)
            self.processor = transformers.AutoProcessor.from_pretrained(str(self.folder))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UserError(f"cannot load the captioning model in {self.folder}: {' '.join(str(err).split())[:200]}; "
                            f"it needs an image-to-text model and its processor") from err
        if not hasattr(self.model, "generate"):
            raise UserError(f"{self.folder} holds a {type(self.model).__name__}, which does not generate text")
        self.device = torch.device(device or "cpu")
        self.model.to(self.device)
        self.max_new_tokens = int(max_new_tokens)

    def caption(self, frames: np.ndarray) -> list[str]:
        """One caption per frame of ``frames`` (N, H, W, 3) uint8."""
        import torch

        inputs = self.processor(images=list(frames), return_tensors="pt").to(self.device)
        with torch.no_grad():
            ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1)
        return [" ".join(text.split()) for text in self.processor.batch_decode(ids, skip_special_tokens=True)]

    def describe(self) -> dict:
        from vfusion.utils.hashing import weights_sha256

        return {"model": str(self.folder.resolve()), "class": type(self.model).__name__,
                "sha256": weights_sha256(self.folder), "max_new_tokens": self.max_new_tokens,
                "decoding": "greedy"}


def join_captions(captions: list[str]) -> str:
    """The distinct non-empty captions of a video's frames, in frame order, joined with "; "."""
    return "; ".join(dict.fromkeys(c for c in captions if c))


def caption_folder(root: str | Path, captioner: Captioner, frames: int = 1, overwrite: bool = False,
                   progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Write a sidecar caption for every video under ``root``; returns (and writes) the report."""
    from tqdm import tqdm

    from vfusion.data.captions import sidecar_path
    from vfusion.data.folder import list_folder
    from vfusion.data.sources import FrameReader, UnreadableVideo, count_frames
    from vfusion.utils.io import atomic_write_json, atomic_write_text

    if frames < 1:
        raise UserError(f"--frames {frames}: caption at least one frame per video")
    root = Path(root).expanduser()
    listing = list_folder(root, "all", dataset="captions")
    start = time.perf_counter()
    reader = FrameReader()
    written, kept, failed = [], [], []
    for item in tqdm(listing.items, desc="captioning", unit="video", disable=not progress):
        target = Path(sidecar_path(item))
        if target.exists() and not overwrite:
            kept.append(item.key)
            continue
        try:
            video = reader.read(item, frame_indices(count_frames(item), frames))
        except UnreadableVideo as err:
            failed.append(f"{item.key}: unreadable ({err})")
            continue
        text = join_captions(captioner.caption(video))
        if not text:
            failed.append(f"{item.key}: the model's caption is empty")
            continue
        atomic_write_text(target, text + "\n")
        written.append(item.key)
    report = {"root": str(root.resolve()), "videos": len(listing.items), "written": len(written), "kept": len(kept),
              "failed": len(failed), "failures": failed, "overwrite": bool(overwrite),
              "frames": "the keyframe (T // 2)" if frames == 1 else f"{frames} evenly spaced frames, distinct "
                                                                    "captions joined with '; '",
              **captioner.describe(), "seconds": round(time.perf_counter() - start, 3)}
    atomic_write_json(root / REPORT, report)
    redo = "" if overwrite else "; --overwrite redoes them"
    log(f"{len(written)} captions written, {len(kept)} kept (already there{redo}), "
        f"{len(failed)} failed; report: {root / REPORT}")
    return report
