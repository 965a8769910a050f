"""A small, randomly initialised, frozen CLIP text model: a text encoder that needs no download.

``model.text.encoder: random`` makes a fresh base text-conditioned with it, so a text-to-video run (the
embedded text main job) trains end to end offline. Its tokenizer is byte-level (the GPT-2/CLIP byte table with
no merges: one token per byte), so it takes any prompt. A random frozen encoder carries no language knowledge;
it is an injective-enough map from strings to states, and the UNet's cross-attention learns what each caption
means from the data. It is built from a seed, so every run with the same settings gets the same weights, and
it is saved with the stage-1 base like any other text encoder.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

MAX_LENGTH = 77  # CLIP's text length; the longest embedded caption is 56 bytes


def byte_symbols() -> list[str]:
    """The GPT-2/CLIP byte-to-unicode table: printable bytes map to themselves, the rest to 256 + k."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
    symbols, shifted = [], 0
    for byte in range(256):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols


def byte_tokenizer(max_length: int = MAX_LENGTH):
    """A CLIPTokenizer over the 256 byte symbols (alone and word-final) and the two special tokens."""
    from transformers import CLIPTokenizer

    symbols = byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": 256 + i for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = 512
    vocab["<|endoftext|>"] = 513
    with tempfile.TemporaryDirectory() as staging:
        (Path(staging) / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        (Path(staging) / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        return CLIPTokenizer.from_pretrained(staging, model_max_length=max_length)


def random_clip_text(width: int = 32, layers: int = 2, seed: int = 0, heads: int = 2,
                     max_length: int = MAX_LENGTH):
    """``(tokenizer, CLIPTextModel)``: ``width``-wide states, ``layers`` blocks, weights drawn from ``seed``
    (the caller's torch RNG state is left as it was)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = byte_tokenizer(max_length)
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width,
                            num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=max_length,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = CLIPTextModel(config).eval()
    return tokenizer, encoder
