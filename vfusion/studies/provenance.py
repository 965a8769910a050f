"""What a committed result was made from: its command, commit, date, and a hash of every run's resolved config.

A results folder's ``provenance.json`` records, per run of its study (stage-1 bases included), a hash of
the run's config as the study harness resolved it: the experiment config, the study's overrides, the
FLOPs budget turned into steps, and every schema default; and the config keys the hash covers.
Re-resolving the study later and hashing the same keys tells whether the committed numbers still describe
what the same command would run: a changed default or value, or a removed key, shows up as a stale result
instead of passing silently. A key added since (a new option) is not in the hash: its default is taken to
keep the old behaviour, which is what a new option's default is for.
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


def flat_config(cfg: DictConfig) -> dict:
    """The resolved config as ``{dotted key: value}`` (lists are values), without its place on disk."""
    out: dict = {}

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = value

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    for key in _PLACE_KEYS:
        out.pop(key, None)
    return out


_ABSENT = "<absent>"


def config_hash(cfg: DictConfig, keys: Optional[list[str]] = None) -> str:
    """sha256 (first 16 hex digits) of the resolved config's ``keys`` (default: all) as canonical JSON."""
    data = flat_config(cfg)
    if keys is not None:
        data = {k: data.get(k, _ABSENT) for k in keys}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def study_of(study_file: str | Path, overrides: Optional[list[str]] = None):
    """The study a results folder came from: a study file, or an experiment config (``vfusion pipeline``)."""
    from vfusion.studies import spec

    raw = OmegaConf.load(study_file)
    if "grid" in raw or "base" in raw:
        return spec.load_study(study_file, overrides)
    return spec.single_run_study(study_file, overrides)


def resolved_configs(study_file: str | Path, overrides: Optional[list[str]] = None) -> dict[str, DictConfig]:
    """``{run id: resolved config}`` for every run of the study, and ``stage1_s{seed}`` for each stage-1 base."""
    from vfusion.studies.spec import plan_study, stage1_config

    study = study_of(study_file, overrides)
    configs: dict[str, DictConfig] = {}
    for plan, cfg in plan_study(study):
        if plan.stage1_dir is not None and f"stage1_s{plan.seed}" not in configs:
            configs[f"stage1_s{plan.seed}"] = stage1_config(study, plan.seed)
        configs[plan.run_id] = cfg
    return configs


def config_hashes(study_file: str | Path, overrides: Optional[list[str]] = None,
                  keys: Optional[list[str]] = None) -> dict[str, str]:
    """``{run id: hash}`` of every run's resolved config (over ``keys``, default all of each)."""
    return {k: config_hash(cfg, keys) for k, cfg in resolved_configs(study_file, overrides).items()}


def config_record(study_file: str | Path, overrides: Optional[list[str]] = None) -> dict:
    """``{"config_keys": [...], "config_hashes": {run id: hash}}``: the keys every run's config has today, and
    each run's hash over them."""
    configs = resolved_configs(study_file, overrides)
    keys = sorted(set.intersection(*(set(flat_config(c)) for c in configs.values()))) if configs else []
    return {"config_keys": keys, "config_hashes": {k: config_hash(c, keys) for k, c in configs.items()}}


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
            **config_record(repo / study_file, overrides)}


def stale_runs(record: dict, repo: Path) -> dict[str, tuple[Optional[str], Optional[str]]]:
    """``{run id: (recorded hash, today's hash)}`` for every run whose config, over the recorded keys, no
    longer matches (a run added or removed counts too)."""
    today = config_hashes(repo / record["study_file"], record.get("overrides"), record.get("config_keys"))
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
