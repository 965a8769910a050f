"""What ``vfusion data check`` says about a captioned dataset's captions.

Counts the usable captions and the videos left out (missing, empty, unreadable caption), and the
captions' length: in the tokens of a given tokenizer, with how many exceed its limit and would be cut
(the text encoder only sees the first ``model_max_length`` tokens, special tokens included), or in
words when no tokenizer is given.
"""

from __future__ import annotations

from typing import Optional, Sequence


def problem_kind(reason: str) -> str:
    """``missing`` / ``empty`` / ``unreadable`` from a skip reason of :mod:`vfusion.data.captions`."""
    for kind in ("empty", "unreadable"):
        if kind in reason:
            return kind
    return "missing"


def caption_report(captions: Sequence[str], skipped: Sequence[str], tokenizer=None,
                   max_length: Optional[int] = None) -> dict:
    """Counts and length statistics of ``captions``; ``skipped`` holds the ``"key: reason"`` of videos left out."""
    kinds = [problem_kind(s.rsplit(": ", 1)[-1]) for s in skipped]
    report = {"captions": len(captions), **{k: kinds.count(k) for k in ("missing", "empty", "unreadable")}}
    if tokenizer is not None:
        limit = int(max_length or tokenizer.model_max_length)
        ids = tokenizer(list(captions), truncation=False, verbose=False)["input_ids"] if captions else []
        lengths = [len(row) for row in ids]
        report.update(unit="tokens", limit=limit, cut=sum(n > limit for n in lengths))
    else:
        lengths = [len(c.split()) for c in captions]
        report.update(unit="words", limit=None, cut=None)
    if lengths:
        report.update(min=min(lengths), mean=sum(lengths) / len(lengths), max=max(lengths))
    return report


def report_lines(report: dict) -> list[str]:
    """The report as ``data check`` prints it."""
    lines = [f"  captions     {report['captions']} ({report['missing']} missing, {report['empty']} empty, "
             f"{report['unreadable']} unreadable: left out with data.missing_caption=skip, an error with =error)"]
    if "min" in report:
        line = (f"  caption len  {report['min']}-{report['max']} {report['unit']} (mean {report['mean']:.1f})")
        if report["unit"] == "tokens":
            line += f"; {report['cut']} cut at the tokenizer's limit of {report['limit']} tokens"
        else:
            line += " (pass --tokenizer DIR for tokens and the captions cut at its limit)"
        lines.append(line)
    return lines
