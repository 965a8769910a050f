"""The one conditioning type every denoiser takes: ``forward(x_t, t, cond)``.

A :class:`Cond` carries what a clip is conditioned on — class labels, text embeddings
(with their attention mask) — and which rows ask for the unconditional ("null")
version. Classifier-free guidance and condition dropout only flip ``uncond``; the
null label (index ``num_classes`` of a model's label table) and the null text (the
empty prompt's embedding) are filled in by :meth:`Cond.label_ids` and
:meth:`Cond.text_states`, the one place that knows how. ``cond=None`` means
"unconditional" for every row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch


@dataclass(frozen=True)
class Cond:
    class_labels: Optional[torch.Tensor] = None      # (B,) long in [0, num_classes)
    text_embeds: Optional[torch.Tensor] = None       # (B, L, D) text encoder states
    text_mask: Optional[torch.Tensor] = None         # (B, L) attention mask of text_embeds
    # (1, L, D) the empty prompt's states (the null text), or (B, L, D) one per row (negative prompts)
    null_text_embeds: Optional[torch.Tensor] = None
    null_text_mask: Optional[torch.Tensor] = None    # (1 or B, L) its attention mask
    uncond: Optional[torch.Tensor] = None            # (B,) bool: rows that ask for the null condition

    @property
    def batch_size(self) -> Optional[int]:
        for v in (self.class_labels, self.text_embeds, self.uncond):
            if v is not None:
                return int(v.shape[0])
        return None

    def null(self) -> "Cond":
        """The same rows, all unconditional (the second half of a guided batch)."""
        return replace(self, uncond=torch.ones(self.batch_size, dtype=torch.bool, device=_device(self)))

    def drop(self, p: float) -> "Cond":
        """Condition dropout for classifier-free guidance: each row becomes unconditional with probability p."""
        if p <= 0 or self.batch_size is None:
            return self
        ref = self.class_labels if self.class_labels is not None else self.text_embeds
        drop = torch.rand(ref.shape[:1], device=ref.device) < p
        return replace(self, uncond=drop if self.uncond is None else (self.uncond | drop))

    @staticmethod
    def cat(a: "Cond", b: "Cond") -> "Cond":
        """Rows of ``a`` then rows of ``b`` (fields present in both)."""
        def both(x, y):
            return None if x is None or y is None else torch.cat([x, y])

        ua = a.uncond if a.uncond is not None else torch.zeros(a.batch_size, dtype=torch.bool, device=_device(a))
        ub = b.uncond if b.uncond is not None else torch.zeros(b.batch_size, dtype=torch.bool, device=_device(b))
        null, null_mask = a.null_text_embeds, a.null_text_mask
        if a.per_row_null or b.per_row_null:  # negative prompts: one null per row, on both sides
            null = both(a._rows(a.null_text_embeds), b._rows(b.null_text_embeds))
            null_mask = both(a._rows(a.null_text_mask), b._rows(b.null_text_mask))
        return Cond(class_labels=both(a.class_labels, b.class_labels), text_embeds=both(a.text_embeds, b.text_embeds),
                    text_mask=both(a.text_mask, b.text_mask), null_text_embeds=null,
                    null_text_mask=null_mask, uncond=torch.cat([ua, ub]))

    @property
    def per_row_null(self) -> bool:
        """The null text differs from row to row (negative prompts) instead of one shared row."""
        return self.null_text_embeds is not None and self.null_text_embeds.shape[0] > 1

    def _rows(self, x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """A one-row null broadcast to the batch (a per-row one as it is)."""
        return None if x is None else x.expand(self.batch_size, *x.shape[1:])

    def repeat_interleave(self, n: int) -> "Cond":
        """Per-clip rows -> per-frame rows (matches :func:`vfusion.layout.fold_frames`)."""
        def rep(x):
            return None if x is None else x.repeat_interleave(n, dim=0)

        nulls = {}
        if self.per_row_null:
            nulls = dict(null_text_embeds=rep(self.null_text_embeds), null_text_mask=rep(self.null_text_mask))
        return replace(self, class_labels=rep(self.class_labels), text_embeds=rep(self.text_embeds),
                       text_mask=rep(self.text_mask), uncond=rep(self.uncond), **nulls)

    def to(self, device) -> "Cond":
        def mv(x):
            return None if x is None else x.to(device)

        return Cond(mv(self.class_labels), mv(self.text_embeds), mv(self.text_mask), mv(self.null_text_embeds),
                    mv(self.null_text_mask), mv(self.uncond))

    def label_ids(self, num_classes: int, batch: int, device) -> Optional[torch.Tensor]:
        """Label-table indices: the class, or ``num_classes`` (the null label) where unconditional."""
        if num_classes <= 0:
            return None
        null = torch.full((batch,), num_classes, dtype=torch.long, device=device)
        if self.class_labels is None:
            return null
        ids = self.class_labels.to(device=device, dtype=torch.long)
        return ids if self.uncond is None else torch.where(self.uncond.to(device), null, ids)

    def text_states(self) -> Optional[torch.Tensor]:
        """Text encoder states with the null text in the unconditional rows (None without text)."""
        return self._null_rows(self.text_embeds, self.null_text_embeds)


    def attention_mask(self) -> Optional[torch.Tensor]:
        """The text mask with the null text's mask in the unconditional rows (None without a mask)."""
        return self._null_rows(self.text_mask, self.null_text_mask)

    def _null_rows(self, values: Optional[torch.Tensor], null: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """``values`` with ``null`` (one row, broadcast) in the unconditional rows."""
        if values is None or self.uncond is None or null is None:
            return values
        rows = self.uncond.view(-1, *([1] * (values.dim() - 1)))
        return torch.where(rows, null.to(values).expand_as(values), values)


class Conditioner(torch.nn.Module):
    """Batch labels (and captions) -> :class:`Cond`: class labels, and for a text-conditioned base the
    states of each class's prompt (or of the one prompt of unconditional data), encoded once, or the
    states of each clip's own caption (captioned data).

    The tables are non-persistent buffers: they move with the module to the device and stay out
    of checkpoints and the EMA. ``text`` is ``(states (P, L, D), mask (P, L), null states (1, L, D),
    null mask (1, L))`` from :class:`vfusion.text.PromptEncoder`, P = classes or 1.
    """

    def __init__(self, num_classes: int, text: Optional[tuple] = None):
        super().__init__()
        self.num_classes = int(num_classes)
        names = ("text_table", "mask_table", "null_states", "null_mask")
        for name, value in zip(names, text or (None,) * 4):
            self.register_buffer(name, value, persistent=False)

    @property
    def has_text(self) -> bool:
        return self.text_table is not None

    def forward(self, labels: Optional[torch.Tensor], batch: int,
                captions: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> Optional[Cond]:
        """``captions``: the encoded captions of the batch's clips, ``(states (B, L, D), mask (B, L))``, which
        take the place of the prompt table."""
        if not self.has_text:
            return class_cond(labels if self.num_classes else None)
        device = self.text_table.device
        if captions is not None:
            states, mask = (v.to(device) for v in captions)
        else:
            rows = labels.to(device) if labels is not None and self.text_table.shape[0] > 1 else \
                torch.zeros(batch, dtype=torch.long, device=device)
            states = self.text_table[rows]
            mask = self.mask_table[rows] if self.mask_table is not None else None
        return Cond(class_labels=labels if self.num_classes else None, text_embeds=states,
                    text_mask=mask, null_text_embeds=self.null_states, null_text_mask=self.null_mask)


def _device(c: Cond):
    return next(v.device for v in (c.class_labels, c.text_embeds, c.uncond) if v is not None)


def label_ids(cond: Optional[Cond], num_classes: int, batch: int, device) -> Optional[torch.Tensor]:
    """:meth:`Cond.label_ids` for a possibly absent condition (None: every row unconditional)."""
    return (cond or Cond()).label_ids(num_classes, batch, device)


def text_states(cond: Optional[Cond]) -> Optional[torch.Tensor]:
    return None if cond is None else cond.text_states()


def class_cond(labels: Optional[torch.Tensor]) -> Optional[Cond]:
    """A Cond of class labels, or None for unconditional data."""
    return None if labels is None else Cond(class_labels=labels)
