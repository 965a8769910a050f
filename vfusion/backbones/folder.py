"""What a pretrained image-model folder holds, read from its JSON files alone (torch-free).

``model.base.pretrained`` names either a diffusers pipeline folder (``model_index.json`` with ``unet/`` or
``transformer/``, ``scheduler/``, optionally ``vae/``, ``text_encoder/`` and ``tokenizer/``) or a model folder
(``config.json`` + weights) whose siblings are looked at the same way (stage 1 writes ``RUN/base_unet`` beside
``RUN/scheduler``). :func:`inspect_backbone` finds the parts and the kind of image model before any weights load,
so the trainer can adopt its noise process, VAE and text encoder, or refuse what cannot work with one clear line.

Supported (``BACKBONE_CLASSES``): ``UNet2DModel`` (class or unconditional), ``UNet2DConditionModel`` (text through
cross-attention, or the project's class UNet without it), ``DiTTransformer2DModel`` (class) and
``PixArtTransformer2DModel`` (text). A transformer whose ``out_channels`` is twice its ``in_channels`` also predicts
a learned variance ("learned σ", as the published DiT/PixArt models): only its first ``in_channels`` are kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from vfusion.errors import UserError

# diffusers class name -> the family the base generator calls it as
BACKBONE_CLASSES = {
    "UNet2DModel": "unet",
    "UNet2DConditionModel": "unet",
    "DiTTransformer2DModel": "dit",
    "PixArtTransformer2DModel": "pixart",
}
MODEL_SUBFOLDERS = ("unet", "transformer")


class BackboneError(UserError):
    """A pretrained folder that cannot serve as the base generator as asked."""


def read_json(path: Path, error: type = None, what: str = "JSON file", fix: str = "folder") -> dict:
    """A JSON object from ``path``, or one ``error`` (default BackboneError) naming the file.

    ``what`` names the file in the message, ``fix`` what to re-save (the model folder's config reader,
    :func:`vfusion.models.unet2d.read_model_config`, uses this too)."""
    error = error or BackboneError
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise error(f"{path} is not a readable {what} ({' '.join(str(err).split())[:200]}); re-save the "
                    f"{fix} with save_pretrained or fix the file") from err
    if not isinstance(data, dict):
        raise error(f"{path} holds {type(data).__name__}, not a {what} (a JSON object)")
    return data


@dataclass(frozen=True)
class BackboneFolder:
    root: Path                        # the folder the config names
    model_dir: Path                   # the image model's folder (its config.json)
    model_class: str                  # a key of BACKBONE_CLASSES
    config: dict                      # the image model's config.json
    scheduler_file: Optional[Path] = None
    vae_dir: Optional[Path] = None
    text_encoder_dir: Optional[Path] = None
    tokenizer_dir: Optional[Path] = None
    id2label: Optional[dict] = None   # DiT folders: checkpoint class id -> name(s)

    @property
    def family(self) -> str:
        return BACKBONE_CLASSES[self.model_class]

    @property
    def in_channels(self) -> int:
        return int(self.config.get("in_channels", 3))

    @property
    def out_channels(self) -> int:
        out = self.config.get("out_channels")
        return int(out) if out is not None else self.in_channels

    @property
    def learned_sigma(self) -> bool:
        return self.family != "unet" and self.out_channels == 2 * self.in_channels

    @property
    def cross_attention(self) -> bool:
        """A UNet whose blocks attend to encoder states (a text UNet)."""
        blocks = list(self.config.get("down_block_types") or []) + list(self.config.get("up_block_types") or [])
        return self.model_class == "UNet2DConditionModel" and any("CrossAttn" in b for b in blocks)

    @property
    def needs_text(self) -> bool:
        return self.cross_attention or self.family == "pixart"

    @property
    def has_text_encoder(self) -> bool:
        return self.text_encoder_dir is not None and self.tokenizer_dir is not None

    @property
    def num_class_ids(self) -> Optional[int]:
        """Classes of a class-conditional checkpoint (without the null id), else None."""
        if self.family == "dit":
            n = self.config.get("num_embeds_ada_norm")
            return int(n) if n else None
        n = self.config.get("num_class_embeds")
        return int(n) - 1 if n else None

    def scheduler_config(self) -> Optional[dict]:
        return read_json(self.scheduler_file) if self.scheduler_file is not None else None

    def describe(self) -> str:
        parts = [self.model_class, f"{self.in_channels} channels"]
        if self.learned_sigma:
            parts.append("learned σ")
        if self.needs_text:
            parts.append("text-conditioned")
        return f"{self.model_dir} ({', '.join(parts)})"


def _model_dir(root: Path, subfolder: Optional[str]) -> Path:
    candidates = [root / subfolder] if subfolder else [root] + [root / s for s in MODEL_SUBFOLDERS]
    for c in candidates:
        if (c / "config.json").is_file():
            return c
    raise BackboneError(f"no diffusers model config.json in {' or '.join(str(c) for c in candidates)}; point "
                        "model.base.pretrained at a model folder or a pipeline folder with unet/ or transformer/")


def _part(places: list[Path], name: str, marker: str) -> Optional[Path]:
    for place in places:
        if (place / name / marker).is_file():
            return place / name
    return None


def inspect_backbone(path: str | Path, subfolder: Optional[str] = None) -> BackboneFolder:
    """The parts of the pretrained folder ``path`` (nothing is loaded)."""
    root = Path(path).expanduser()
    if not root.exists():
        raise BackboneError(f"model.base.pretrained '{root}' does not exist (expected a diffusers pipeline or model "
                            "folder, e.g. written by `vfusion pretrain-base` or save_pretrained)")
    model_dir = _model_dir(root, subfolder)
    config = read_json(model_dir / "config.json")
    name = config.get("_class_name")
    if name not in BACKBONE_CLASSES:
        raise BackboneError(f"{model_dir}/config.json describes a '{name}', which the project cannot use as the base "
                            f"generator; supported: {', '.join(BACKBONE_CLASSES)}")
    # the pipeline folder (model_index.json), else the model folder's parent, then the folder itself
    places = [p for p in dict.fromkeys([root, model_dir.parent, model_dir]) if p.is_dir()]
    pipeline_root = next((p for p in places if (p / "model_index.json").is_file()), None)
    id2label = None
    if pipeline_root is not None:
        raw = read_json(pipeline_root / "model_index.json").get("id2label")
        if isinstance(raw, dict):
            id2label = {int(k): str(v) for k, v in raw.items()}
    sched = None
    for place in places:
        for f in (place / "scheduler" / "scheduler_config.json", place / "scheduler_config.json"):
            if f.is_file() and sched is None:
                sched = f
    return BackboneFolder(root=root, model_dir=model_dir, model_class=name, config=config, scheduler_file=sched,
                          vae_dir=_part(places, "vae", "config.json"),
                          text_encoder_dir=_part(places, "text_encoder", "config.json"),
                          tokenizer_dir=_part(places, "tokenizer", "tokenizer_config.json"), id2label=id2label)
