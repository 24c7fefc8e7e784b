"""The documentation the code points to exists: docs/architecture.md, its sections, its links."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
SOURCES = (".py", ".c", ".h", ".md")
# Written in two parts so that this file does not match itself.
FOREIGN_DOC = "DES" + "IGN"
_REFERENCE = re.compile(r"(?:docs/)?architecture\.md#([A-Za-z0-9_-]+)")
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#([^)\s]+))?\)")


def _tracked() -> list[Path]:
    """The repository's source and documentation files (git's list, else a walk of the tree)."""
    git = shutil.which("git")
    if git is not None and (ROOT / ".git").exists():
        out = subprocess.run(
            [git, "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
        ).stdout.decode()
        files = [ROOT / name for name in out.split("\0") if name]
    else:
        skip = {"build", "dist", "node_modules", "__pycache__", "venv"}
        files = [
            p
            for p in ROOT.rglob("*")
            if not any(
                part.startswith(".") or part in skip or part.endswith(".egg-info")
                for part in p.relative_to(ROOT).parts
            )
        ]
    return sorted(p for p in files if p.suffix in SOURCES and p.is_file())


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            text = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_no_source_or_doc_cites_a_design_file_outside_the_architecture_page() -> None:
    files = _tracked()
    assert ARCHITECTURE in files
    hits = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
        for p in files
        if p != ARCHITECTURE
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
        if FOREIGN_DOC in line
    ]
    assert not hits, "cite docs/architecture.md instead:\n" + "\n".join(hits)


def test_every_reference_to_the_architecture_page_names_a_section_it_has() -> None:
    anchors = _anchors(ARCHITECTURE.read_text())
    assert {"the-syncasync-policy", "tifed", "the-serial-protocol"} <= anchors
    missing = [
        f"{p.relative_to(ROOT)}: #{anchor}"
        for p in _tracked()
        for anchor in _REFERENCE.findall(p.read_text(errors="replace"))
        if anchor not in anchors
    ]
    assert not missing, "no such section in docs/architecture.md:\n" + "\n".join(missing)


def test_the_architecture_pages_links_lead_somewhere() -> None:
    text = ARCHITECTURE.read_text()
    own = _anchors(text)
    broken = []
    for target, anchor in _LINK.findall(text):
        if target.startswith("http"):
            continue
        path = (ARCHITECTURE.parent / target).resolve()
        if not path.exists():
            broken.append(target)
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path.read_text()):
            broken.append(f"{target}#{anchor}")
    for anchor in re.findall(r"\]\(#([^)\s]+)\)", text):
        if anchor not in own:
            broken.append(f"#{anchor}")
    assert not broken, broken


@pytest.mark.parametrize(
    "folder", ["eddl", "leader", "worker", "profiler", "firmware", "proto", "deploy", "bench"]
)
def test_the_module_map_lists_every_top_level_folder(folder: str) -> None:
    assert f"| `{folder}/" in ARCHITECTURE.read_text()


def test_the_readme_links_the_architecture_page() -> None:
    assert "(docs/architecture.md)" in (ROOT / "README.md").read_text()
