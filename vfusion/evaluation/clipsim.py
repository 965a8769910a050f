"""CLIPSIM: how well clips match their text, the mean CLIP image-text cosine similarity over frames.

    clipsim(clip, text) = mean_t cos(f_img(frame_t), f_txt(text))        CLIPSIM = mean over the clips

as text-to-video papers report it on MSR-VTT (GODIVA introduced it; CogVideo, Make-A-Video and Video LDM report the
raw cosine, about 0.29-0.31, not x100 and not CLIPScore's 2.5 * max(cos, 0)). The CLIP model is a user-supplied
transformers folder (``eval.clip_model``: ``CLIPModel`` weights, its image processor and tokenizer, e.g.
``openai/clip-vit-base-patch32`` saved locally). Every frame is scored, quantised to uint8 first as every evaluated
clip is, then resized (shortest side, bicubic), center cropped and normalised by the folder's image processor; the
text is tokenised by its tokenizer, cut at the text model's positions. f are the projected embeddings, L2-normalised.
The protocol, with the sha256 of the weight files, goes into metrics.json; :class:`RunTexts` says which text each
clip of a run is scored against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from vfusion.errors import UserError
from vfusion.evaluation.clip_sources import dataset_batches, dataset_subsets
from vfusion.utils.hashing import weights_sha256

def _features(out) -> torch.Tensor:
    """The projected embedding from ``get_*_features`` (a tensor, or an output whose pooler holds it)."""
    return out if torch.is_tensor(out) else out.pooler_output


class ClipScorer:
    """A frozen CLIP model and its processor, scoring clips against texts."""

    def __init__(self, folder: str | Path, device: Optional[str] = None):
        from transformers import CLIPModel, CLIPProcessor

        self.folder = Path(folder)
        if not (self.folder / "config.json").is_file():
            raise UserError(f"eval.clip_model {self.folder} is not a transformers CLIP folder (no config.json); save "
                            f"a CLIPModel and its CLIPProcessor there with save_pretrained")
        try:
            self.model = CLIPModel.from_pretrained(str(self.folder)).eval().requires_grad_(False)
            self.processor = CLIPProcessor.from_pretrained(str(self.folder))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UserError(f"cannot load the CLIP model in {self.folder}: {' '.join(str(err).split())[:200]}; it "
                            f"needs a CLIPModel and its CLIPProcessor (image processor + tokenizer)") from err
        self.device = torch.device(device or "cpu")
        self.model.to(self.device)
        self.max_tokens = int(self.model.config.text_config.max_position_embeddings)
        self._texts: dict[str, torch.Tensor] = {}

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """``(N, D)`` normalised text embeddings, each distinct text encoded once."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._texts]
        if todo:
            tokens = self.processor.tokenizer(todo, padding=True, truncation=True, max_length=self.max_tokens,
                                              return_tensors="pt").to(self.device)
            feats = _features(self.model.get_text_features(**tokens))
            for text, f in zip(todo, torch.nn.functional.normalize(feats.float(), dim=-1)):
                self._texts[text] = f
        return torch.stack([self._texts[t] for t in texts])

    @torch.no_grad()
    def scores(self, videos: torch.Tensor, texts: Sequence[str]) -> np.ndarray:
        """Per clip: the mean over its frames of the cosine to its text. ``videos`` (B, C, T, H, W) in [-1, 1]."""
        if videos.dim() != 5 or len(texts) != videos.shape[0]:
            raise ValueError(f"expected {videos.shape[0]} texts for clips (B, C, T, H, W), got {len(texts)} for "
                             f"{tuple(videos.shape)}")
        b, _, t = videos.shape[:3]
        frames = ((videos.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)   # the levels of a file
        frames = frames.permute(0, 2, 3, 4, 1).reshape(b * t, *frames.shape[3:], frames.shape[1]).cpu().numpy()
        pixels = self.processor.image_processor(images=list(frames), return_tensors="pt")["pixel_values"]
        image = _features(self.model.get_image_features(pixel_values=pixels.to(self.device)))
        image = torch.nn.functional.normalize(image.float(), dim=-1).view(b, t, -1)   # (B, T, D)
        text = self.text_features(list(texts))                                         # (B, D)
        return torch.einsum("btd,bd->bt", image, text).mean(dim=1).cpu().double().numpy()

    def protocol(self) -> dict:
        ip = self.processor.image_processor
        return {"model": str(self.folder.resolve()), "sha256": weights_sha256(self.folder),
                "frames": "every frame of each clip, quantised to uint8",
                "resize": f"{type(ip).__name__}: shortest side to {getattr(ip, 'size', None)}, center crop "
                          f"{getattr(ip, 'crop_size', None)}, mean {getattr(ip, 'image_mean', None)}, "
                          f"std {getattr(ip, 'image_std', None)}",
                "text": f"the folder's tokenizer, cut at {self.max_tokens} tokens",
                "score": "mean over clips of the mean over frames of cos(image embedding, text embedding) "
                         "(projected CLIP embeddings; raw cosine, not x100)"}


def clipsim(scorer: ClipScorer, batches, texts_of) -> np.ndarray:
    """Per-clip scores of ``(videos, labels)`` batches; ``texts_of(start, labels, count)`` names each clip's text."""
    out, done = [], 0
    for videos, labels in batches:
        out.append(scorer.scores(videos, texts_of(done, labels, videos.shape[0])))
        done += videos.shape[0]
    return np.concatenate(out) if out else np.zeros(0)


class RunTexts:
    """CLIPSIM of a text-conditioned run: each generated clip's text and the real clips' reference.

    A captioned run (``base.captions``) is sampled with the captions of the evaluation's real clips (video i
    from the caption of real clip i, as text-to-video papers generate one video per test caption) and the
    reference is CLIPSIM of those real clips with their own captions. A run on class prompts scores each clip
    against its class's prompt; the reference is the real clips with theirs."""

    def __init__(self, run, cfg, split: str, num: int, clip_model, device):
        if not clip_model:
            raise UserError("--metrics clipsim needs a CLIP model folder: pass --clip-model DIR (eval.clip_model), a "
                            "transformers CLIPModel saved with its CLIPProcessor")
        vc = run.video_config()
        self.base = dict(vc.get("base") or {})
        if not self.base.get("text"):
            raise UserError(f"clipsim measures how clips match their text, but the run {run.path} is not "
                            "text-conditioned (its base has no text encoder)")
        self.table = list(self.base.get("prompts") or [])
        self.scorer = ClipScorer(clip_model, device)  # a wrong folder is refused before sampling
        self.dataset, self.indices, captions = real_captions(cfg, split, num)
        self.prompts = captions if self.base.get("captions") else None
        self.num_frames, self.split = int(cfg.data.num_frames), split
        self.fake_scores: list = []

    def settings(self, settings):
        from dataclasses import replace

        if self.prompts is None:
            return settings
        if settings.prompt is not None or settings.prompts is not None:
            raise UserError("a captioned run is evaluated with the real clips' captions as prompts; give no prompt")
        return replace(settings, prompts=tuple(self.prompts))

    def _texts(self, start: int, labels, count: int) -> list[str]:
        if self.prompts is not None:
            return self.prompts[start:start + count]
        if labels is None or len(self.table) < 2:
            return [self.table[0]] * count
        return [self.table[int(v)] for v in labels]

    def scoring(self, batches, settings):
        """``batches`` passed through unchanged, each clip scored against its text on the way."""
        done = 0
        for videos, labels in batches:
            self.fake_scores.append(self.scorer.scores(videos, self._texts(done, labels, videos.shape[0])))
            done += videos.shape[0]
            yield videos, labels

    def values(self, batch_size: int) -> dict:
        fake = np.concatenate(self.fake_scores)
        real = clipsim(self.scorer, dataset_batches(self.dataset, self.indices, batch_size, with_labels=True),
                       lambda start, labels, count: (
                           [_caption(self.dataset, i) for i in self.indices[start:start + count]]
                           if self.prompts is not None else self._texts(start, labels, count)))
        n, t = len(fake), self.num_frames
        return {f"clipsim{n}_{t}f": float(fake.mean()), f"clipsim{n}_{t}f_real": float(real.mean())}

    def protocol(self) -> dict:
        texts = ("each generated clip: the caption of real clip i of the evaluation's subset (its prompt); real: "
                 "each clip's own caption" if self.prompts is not None else
                 "each clip: its class's prompt (the run's template); real: the same for the real clips")
        return {**self.scorer.protocol(), "texts": texts, "real_split": self.split,
                "num_real": len(self.indices)}


def real_captions(cfg, split: str, num: int):
    """``(dataset, indices, prompts)``: the evaluation's real subset of ``num`` clips and, for a captioned
    dataset, one prompt per generated clip (clip i: the caption of real clip i, cycling), else None."""
    from vfusion.data.registry import has_captions

    dataset, (indices,) = dataset_subsets(cfg.data, split, [num])
    if not has_captions(cfg.data.dataset):
        return dataset, indices, None
    captions = [_caption(dataset, i) for i in indices]
    return dataset, indices, [captions[i % len(captions)] for i in range(num)]


def _caption(dataset, i: int) -> str:
    """The caption of item ``i`` of a decoding or cached captioned dataset."""
    return dataset.caption(i) if hasattr(dataset, "caption") else dataset.captions[i]
