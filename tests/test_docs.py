"""The user documentation cites only what a user of the repository has: no files outside it, no local machines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PRESETS = sorted((ROOT / "configs").glob("*.yaml"))
# Files and places only the developers' machines have.
OUTSIDE = re.compile(r"ANCHORS\.md|\.\./shared|shared/(?:data|papers|reference)|/work/|this project's", re.IGNORECASE)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("path", DOCS + PRESETS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_reference_outside_the_repository(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    hits = [f"line {text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}" for m in OUTSIDE.finditer(text)]
    assert not hits, f"{path.name} cites what a user of the repository does not have: {hits}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_stay_inside_the_repository_and_exist(path: Path) -> None:
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        resolved = (path.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{path.name}: link {target} leaves the repository"
        assert resolved.exists(), f"{path.name}: link {target} names no file"


def test_the_scan_catches_what_it_is_for() -> None:
    for text in ("see ANCHORS.md", "../shared/data/lidc", "on this project's CPU machines"):
        assert OUTSIDE.search(text), text
    assert not OUTSIDE.search("diffuseg verify data/ddti  # your data folder")
