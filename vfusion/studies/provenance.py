"""What a committed result was made from: its command, commit, date, and a hash of every run's resolved config.

A results folder's ``provenance.json`` records, per run of its study (stage-1 bases included), a hash of
the run's config as the study harness resolves it today: the experiment config, the study's overrides,
the FLOPs budget turned into steps, and every schema default. Re-resolving the study later and comparing
the hashes tells whether the committed numbers still describe what the same command would run: a changed
default or config value shows up as a stale result instead of passing silently.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf

PROVENANCE_FILE = "provenance.json"
# where a run lives is not what it is
_PLACE_KEYS = ("run_dir",)


def config_hash(cfg: DictConfig) -> str:
    """sha256 (first 16 hex digits) of the resolved config as canonical JSON, without its place on disk."""
    data = OmegaConf.to_container(cfg, resolve=True)
    for key in _PLACE_KEYS:
        data.pop(key, None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def study_of(study_file: str | Path, overrides: Optional[list[str]] = None):
    """The study a results folder came from: a study file, or an experiment config (``vfusion pipeline``)."""
    from vfusion.studies import spec

    raw = OmegaConf.load(study_file)
    if "grid" in raw or "base" in raw:
        return spec.load_study(study_file, overrides)
    return spec.single_run_study(study_file, overrides)


def config_hashes(study_file: str | Path, overrides: Optional[list[str]] = None) -> dict[str, str]:
    """``{run id: hash}`` for every run of the study, and ``stage1_s{seed}`` for each stage-1 base it trains."""
    from vfusion.studies.spec import plan_study, stage1_config

    study = study_of(study_file, overrides)
    hashes: dict[str, str] = {}
    for plan, cfg in plan_study(study):
        if plan.stage1_dir is not None and f"stage1_s{plan.seed}" not in hashes:
            hashes[f"stage1_s{plan.seed}"] = config_hash(stage1_config(study, plan.seed))
        hashes[plan.run_id] = config_hash(cfg)
    return hashes


def git_commit(repo: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def provenance(study_file: str, command: str, repo: Path, overrides: Optional[list[str]] = None,
               date: Optional[str] = None, commit: Optional[str] = None) -> dict:
    """The record ``provenance.json`` holds (``study_file`` relative to the repository)."""
    return {"command": command, "date": date or _dt.date.today().isoformat(),
            "commit": commit or git_commit(repo), "study_file": study_file, "overrides": list(overrides or []),
            "config_hashes": config_hashes(repo / study_file, overrides)}


def stale_runs(record: dict, repo: Path) -> dict[str, tuple[Optional[str], Optional[str]]]:
    """``{run id: (recorded hash, today's hash)}`` for every run whose config no longer matches."""
    today = config_hashes(repo / record["study_file"], record.get("overrides"))
    recorded = record["config_hashes"]
    return {k: (recorded.get(k), today.get(k)) for k in sorted(set(recorded) | set(today))
            if recorded.get(k) != today.get(k)}


def readme_block(record: dict) -> str:
    """The lines that open a results folder's README, from its ``provenance.json`` record."""
    status = record.get("status", "current")
    hashes = ", ".join(f"`{k}` {v}" for k, v in record["config_hashes"].items()) or "not recorded"
    lines = [f"<!-- provenance: from {PROVENANCE_FILE}; rewrite with experiments/record_provenance.py -->",
             f"> **Command:** `{record['command']}`  ",
             f"> **Date:** {record['date']} · **commit:** {record['commit']} · **study:** `{record['study_file']}`"
             + (f" `{' '.join(record['overrides'])}`" if record.get("overrides") else "") + "  ",
             f"> **Status:** {status}" + (f" ({record['why']})" if record.get("why") else "") + "  ",
             f"> **Resolved run configs** (sha256, first 16 hex digits): {hashes}",
             "<!-- /provenance -->"]
    return "\n".join(lines)
