"""Prompts from class names, and a frozen, cached text encoder read from a diffusers pipeline folder.

Class names become prompts through a template (``"a video of {}"``, the phrasing of text-to-video
baselines trained on UCF-101 labels); :class:`PromptEncoder` turns prompts into the states a
text-conditioned base attends to, computed exactly as diffusers' ``StableDiffusionPipeline.encode_prompt``
computes its positive and negative prompt embeddings (pad to ``tokenizer.model_max_length``, truncate,
pass the attention mask only when the encoder's config sets ``use_attention_mask``, take the last
hidden state). The empty prompt's states are the null condition of classifier-free guidance.

The encoder is frozen and is deliberately *not* an ``nn.Module``: models must not hold it as a
submodule, so it never enters checkpoints, optimizers or the EMA copy. transformers is imported only
inside functions, so ``import vfusion.text`` stays cheap.
"""

from __future__ import annotations

import json
import string
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from vfusion.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEFAULT_TEMPLATE = "a video of {}"
_HUGE_LENGTH = 1_000_000  # tokenizers without a configured limit report ~1e30 as model_max_length


class TextEncoderError(UserError):
    """A folder that cannot serve as a text-conditioned base (missing tokenizer/ or text_encoder/, …)."""


def split_class_name(name: str) -> str:
    """A class or folder name as lower-case words: ``ApplyEyeMakeup`` → ``apply eye makeup``.

    Underscores, hyphens, spaces and other punctuation separate words (``clouds_drift`` → ``clouds drift``).
    Inside a run of letters a word starts at a capital that follows a lower-case letter (``YoYo`` →
    ``yo yo``, ``TaiChi`` → ``tai chi``, ``BlowDryHair`` → ``blow dry hair``). A run of several capitals
    is an acronym and stays one word, except that its last capital starts the next word when a
    lower-case letter follows it (``PlayingDVD`` → ``playing dvd``, ``HTMLParser`` → ``html parser``,
    ``ApplyAMakeup`` → ``apply a makeup``). Digits form words of their own (``Top10Moves`` →
    ``top 10 moves``). Works on any Unicode letters (``str.isupper``), not only ASCII.
    """
    words: list[str] = []
    for chunk in "".join(c if c.isalnum() else " " for c in name).split():
        start = 0
        for i in range(1, len(chunk)):
            prev, cur, nxt = chunk[i - 1], chunk[i], chunk[i + 1] if i + 1 < len(chunk) else ""
            if (cur.isdigit() != prev.isdigit()
                    or (cur.isupper() and not prev.isupper() and not prev.isdigit())
                    or (cur.isupper() and prev.isupper() and nxt.isalpha() and not nxt.isupper())):
                words.append(chunk[start:i])
                start = i
        words.append(chunk[start:])
    return " ".join(w.lower() for w in words)


def check_template(template: str) -> str:
    """Return ``template`` if it has exactly one ``{}`` (where the class words go); else a UserError."""
    try:
        fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError:  # an unmatched brace
        fields = None
    if fields != [("", "", None)]:
        raise UserError(f"prompt template {template!r} must contain exactly one '{{}}' where the class name goes "
                        f"(and no other braces), e.g. {DEFAULT_TEMPLATE!r}")
    return template


def class_prompts(class_names: Iterable[str], template: str = DEFAULT_TEMPLATE) -> list[str]:
    """One prompt per class: ``template`` with the class name split into words (:func:`split_class_name`)."""
    check_template(template)
    prompts = []
    for name in class_names:
        words = split_class_name(name)
        if not words:
            raise UserError(f"class name {name!r} has no letters or digits to make a prompt from; rename the class")
        prompts.append(template.format(words))
    return prompts


def _component_class(folder: Path, component: str, fallback: str):
    """The transformers class a pipeline folder names for ``component`` (model_index.json, then config.json)."""
    import transformers

    names = []
    index = folder / "model_index.json"
    if index.is_file():
        entry = json.loads(index.read_text()).get(component)
        if isinstance(entry, list) and len(entry) == 2 and entry[0] == "transformers":
            names.append(entry[1])
    config = folder / component / "config.json"
    if config.is_file():
        names.extend(json.loads(config.read_text()).get("architectures") or [])
    for name in names + [fallback]:
        cls = getattr(transformers, name, None)
        if cls is not None and hasattr(cls, "from_pretrained"):
            return cls
    raise TextEncoderError(f"{folder / component}: no transformers class to load it with (tried {names}); "
                           f"check the folder's model_index.json")


class PromptEncoder:
    """A frozen tokenizer + text encoder with a per-prompt cache of ``(states, mask)``.

    Each distinct prompt string goes through the encoder once, alone (a batch of one), so its states do
    not depend on which other prompts were encoded with it. ``encode`` returns float32 states; ``null()``
    is the empty prompt's states, the null text of classifier-free guidance.

    ``cache_size`` bounds the cache (least recently used prompts leave first; ``None``: unbounded, 0: no
    cache, every prompt is encoded again at every call). Captioned training keeps each caption's states
    here, L x D floats per caption (77 x 768 x 4 bytes = 0.24 MB for Stable Diffusion 1.x).
    """

    def __init__(self, tokenizer, text_encoder, max_length: int | None = None, source: str = "text encoder",
                 cache_size: int | None = None):
        self.cache_size = None if cache_size is None else max(0, int(cache_size))
        self.encoded = 0  # prompts that went through the encoder (cache misses)
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.source = source
        self.max_length = int(max_length if max_length is not None else tokenizer.model_max_length)
        if self.max_length >= _HUGE_LENGTH:
            raise TextEncoderError(f"{source}: the tokenizer sets no model_max_length; pass max_length "
                                   f"(the number of text tokens the base was trained with)")
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    @classmethod
    def from_folder(cls, path: str | Path, max_length: int | None = None, dtype=None,
                    cache_size: int | None = None) -> "PromptEncoder":
        """Load ``tokenizer/`` and ``text_encoder/`` of a diffusers pipeline folder, frozen, in float32 by default.

        The classes are the ones the folder's ``model_index.json`` names (else the encoder config's
        ``architectures``, else AutoTokenizer / AutoModel), so a T5 folder gets a T5EncoderModel."""
        import torch

        folder = Path(path)
        if not folder.is_dir():
            raise TextEncoderError(f"text encoder folder {folder} does not exist; pass a diffusers pipeline folder "
                                   f"with tokenizer/ and text_encoder/")
        missing = [name for name in ("text_encoder", "tokenizer") if not (folder / name).is_dir()]
        if missing:
            raise TextEncoderError(f"{folder} has no {' or '.join(m + '/' for m in missing)}: a text-conditioned "
                                   f"base needs both text_encoder/ and tokenizer/ (a Stable Diffusion-style folder)")
        tokenizer = _component_class(folder, "tokenizer", "AutoTokenizer").from_pretrained(str(folder / "tokenizer"))
        encoder_cls = _component_class(folder, "text_encoder", "AutoModel")
        encoder = encoder_cls.from_pretrained(str(folder / "text_encoder"), dtype=dtype or torch.float32)
        return cls(tokenizer, encoder, max_length=max_length, source=str(folder), cache_size=cache_size)

    @property
    def device(self):
        return next(self.text_encoder.parameters()).device

    def to(self, device) -> "PromptEncoder":
        """Move the encoder (and the cached states) to ``device``; a no-op when already there."""
        import torch

        device = torch.device(device)
        if self.device != device:
            self.text_encoder.to(device)
            self._cache = OrderedDict((p, (s.to(device), m.to(device))) for p, (s, m) in self._cache.items())
        return self

    def _encode_one(self, prompt: str):
        import torch

        tokens = self.tokenizer([prompt], padding="max_length", max_length=self.max_length, truncation=True,
                                return_tensors="pt")
        device = self.device
        use_mask = getattr(self.text_encoder.config, "use_attention_mask", False)
        mask = tokens.attention_mask.to(device)
        with torch.no_grad():
            out = self.text_encoder(tokens.input_ids.to(device), attention_mask=mask if use_mask else None)
        return out[0][0].float(), mask[0].long()  # (L, D), (L,)

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(states (N, L, D) float32, mask (N, L) long)`` for ``prompts``, each encoded once and cached."""
        import torch

        if isinstance(prompts, str):
            raise TypeError("encode takes a list of prompts, not one string")
        if not prompts:
            states, mask = self.encode([""])
            return states[:0], mask[:0]
        found: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for prompt in prompts:
            if prompt in found:
                continue
            if prompt in self._cache:
                self._cache.move_to_end(prompt)
                found[prompt] = self._cache[prompt]
                continue
            found[prompt] = self._encode_one(prompt)
            self.encoded += 1
            if self.cache_size != 0:
                self._cache[prompt] = found[prompt]
                while self.cache_size is not None and len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        states = torch.stack([found[p][0] for p in prompts])
        mask = torch.stack([found[p][1] for p in prompts])
        return states, mask

    def null(self) -> torch.Tensor:
        """The empty prompt's states ``(1, L, D)``: the null condition of classifier-free guidance."""
        return self.encode([""])[0]

    @property
    def cached(self) -> int:
        """How many distinct prompts have been encoded."""
        return len(self._cache)

    def __repr__(self) -> str:
        return (f"PromptEncoder({type(self.text_encoder).__name__} from {self.source}, "
                f"max_length={self.max_length}, cached={self.cached})")


def load_tokenizer(path: str | Path):
    """The tokenizer of a text base folder (its ``tokenizer/``, the class ``model_index.json`` names) or of a
    tokenizer folder; a :class:`TextEncoderError` naming the folder otherwise."""
    folder = Path(path)
    if not folder.is_dir():
        raise TextEncoderError(f"tokenizer folder {folder} does not exist; pass a pipeline folder with tokenizer/ "
                               f"or a tokenizer folder")
    try:
        if (folder / "tokenizer").is_dir():
            return _component_class(folder, "tokenizer", "AutoTokenizer").from_pretrained(str(folder / "tokenizer"))
        import transformers

        return transformers.AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError) as err:
        raise TextEncoderError(f"cannot load a tokenizer from {folder}: {' '.join(str(err).split())[:200]}") from err
