"""Record what a results folder was made from: ``provenance.json`` and the block that opens its README.

    python experiments/record_provenance.py --folder experiments/results/main_job \
        --study configs/embedded.yaml --command "vfusion pipeline --config configs/embedded.yaml" \
        --date 2026-12-07 --commit 40a16d9

The config hashes are those of the study resolved by the code at ``--commit`` (checked out into a
temporary git worktree when it is not HEAD), so a folder made before later changes records what it
really ran. ``--status archived --why "..."`` marks a folder whose recipe is no longer current, and
``--status "in progress" --why "..."`` a study that is still running (its hashes are checked like a current one's).
``tests/test_results_provenance.py`` re-resolves every current folder's study and compares the hashes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from vfusion.studies.provenance import PROVENANCE_FILE, config_record, git_commit, readme_block  # noqa: E402

_AT_COMMIT = """
import json, sys
sys.path.insert(0, sys.argv[1])
exec(open(sys.argv[2]).read())
print(json.dumps(config_record(sys.argv[3], json.loads(sys.argv[4]))))
"""


def record_at(commit: str, study: str, overrides: list[str]) -> dict:
    """The study's config keys and hashes as the code at ``commit`` resolves them."""
    if git_commit(ROOT) == commit:
        return config_record(ROOT / study, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            out = subprocess.run([sys.executable, "-c", _AT_COMMIT, str(tree), str(ROOT / "vfusion/studies/provenance.py"),
                                  study, json.dumps(overrides)], cwd=tree, check=True, capture_output=True, text=True)
            return json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)


def write_readme_block(folder: Path, record: dict) -> None:
    readme = folder / "README.md"
    text = readme.read_text() if readme.exists() else ""
    begin, end = "<!-- provenance", "<!-- /provenance -->"
    if text.startswith(begin):
        text = text[text.index(end) + len(end):].lstrip("\n")
    readme.write_text(readme_block(record) + "\n\n" + text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folder", required=True)
    p.add_argument("--study", required=True, help="the study file or experiment config, relative to the repository")
    p.add_argument("--command", required=True, help="the command that made the results")
    p.add_argument("--date", required=True)
    p.add_argument("--commit", required=True, help="the commit the runs ran at")
    p.add_argument("--status", choices=("current", "in progress", "archived"), default="current")
    p.add_argument("--why", default="", help="archived: one line saying why the recipe is no longer current; in "
                                              "progress: what is done and what is left")
    p.add_argument("overrides", nargs="*", help="key=value overrides the command passed")
    a = p.parse_args(argv)
    if a.status != "current" and not a.why:
        p.error(f"--status {a.status} needs --why")
    folder = Path(a.folder)
    record = {"command": a.command, "date": a.date, "commit": a.commit, "study_file": a.study,
              "overrides": a.overrides, "status": a.status, "why": a.why,
              "config_keys": [], "config_hashes": {}}
    try:
        record.update(record_at(a.commit, a.study, a.overrides))
    except subprocess.CalledProcessError as err:
        print(f"{folder}: the code at {a.commit} cannot resolve {a.study} ({(err.stderr or '').strip().splitlines()[-1:]});"
              " its config hashes are not recorded", file=sys.stderr)
    (folder / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    write_readme_block(folder, record)
    print(f"{folder}: {len(record['config_hashes'])} run configs recorded ({a.status})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
