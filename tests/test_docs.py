"""The README, docs and docstrings point only at files a clone has, and the doc sections they cite exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"\.\./shared|shared/(docs|data)/")
# "method.md, "Training"", "``docs/protocols.md``, "FID (per frame)"": a doc name, then an optional quoted section
CITATION = re.compile(r"\b(method|protocols|testing)\.md`{0,2},?\s?(?:\"([^\"]+)\")?")


def _texts():
    """Every tracked-style text a user reads: README, docs, configs, the package, scripts and tests."""
    files = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "configs").rglob("*.yaml"),
             *(ROOT / "vfusion").rglob("*.py"), *(ROOT / "experiments").glob("*.py"), *(ROOT / "tests").glob("*.py")]
    # conftest.py looks for the reference clip beside the clone as a fallback
    return [p for p in files if p.name != "conftest.py"]


def _headings(doc: Path) -> set[str]:
    return {line.lstrip("#").strip() for line in doc.read_text().splitlines() if line.startswith("#")}


def test_no_file_outside_the_repository_is_named():
    hits = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in _texts()
            for n, line in enumerate(p.read_text().splitlines(), 1) if OUTSIDE.search(line)]
    assert hits == []


def test_cited_docs_and_sections_exist():
    missing = []
    for p in _texts():
        for m in CITATION.finditer(p.read_text()):
            doc = ROOT / "docs" / f"{m.group(1)}.md"
            if not doc.is_file() or (m.group(2) and m.group(2) not in _headings(doc)):
                missing.append(f"{p.relative_to(ROOT)}: {m.group(0)}")
    assert missing == []
