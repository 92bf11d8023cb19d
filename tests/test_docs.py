"""The user documentation: the mkdocs site builds strictly, the README stays short, links resolve, and nothing
points at files that users of the package never get.

``mkdocs build --strict`` fails on any broken link between pages, and (through ``docs/_hooks/repo_files.py``)
on any broken link from a page into the repository (``../results/...``), so no link rots unnoticed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
MAX_README_LINES = 220

# Notes that live outside the repository: users never get them, so neither the README nor the docs may cite them.
FORBIDDEN = ("shared/notes", "notes/", "statistics.md", "method.md", "style.md", "mteb-integration",
             "environment.md")
# The one path outside the repository a reader may see: the default of $LINQ_DATA_DIR, and no file inside it.
SHARED = re.compile(r"(?:\.\./)?shared/")
ALLOWED_SHARED = re.compile(r"\.\./shared/data(?![/\w])")
# [text](target) and ![alt](target); the target ends at whitespace or ')'
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _documents() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def _mkdocs(config: Path, site: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # no --quiet: it hides the warnings --strict counts
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config),
                           "-d", str(site)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _needs_mkdocs() -> None:
    pytest.importorskip("mkdocs", reason="mkdocs is not installed: pip install -e '.[test]' (mkdocs-material)")
    pytest.importorskip("material", reason="mkdocs-material is not installed: pip install -e '.[test]'")


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    _needs_mkdocs()
    res = _mkdocs(REPO / "mkdocs.yml", tmp_path / "site", REPO)
    assert res.returncode == 0, f"mkdocs build --strict failed:\n{res.stdout}\n{res.stderr}"
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "guarantees" / "index.html").is_file()
    # a linked measured result is copied into the site, not left dangling
    assert (tmp_path / "site" / "repo" / "results" / "light" / "validation.json").is_file()


def test_a_broken_link_into_the_repository_fails_the_build(tmp_path: Path) -> None:
    """The hook that resolves ../results/... links must not hide a missing file."""
    _needs_mkdocs()
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(REPO / "results", tmp_path / "results")
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    page = tmp_path / "docs" / "index.md"
    page.write_text(page.read_text(encoding="utf-8") + "\n[gone](../results/no-such-run.md)\n", encoding="utf-8")
    res = _mkdocs(tmp_path / "mkdocs.yml", tmp_path / "site", tmp_path)
    assert res.returncode != 0
    assert "no-such-run.md" in res.stdout + res.stderr


def test_the_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines: move detail into docs/"


@pytest.mark.parametrize("path", _documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_reference_to_files_users_do_not_get(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    found = [name for name in FORBIDDEN if name in text]
    assert not found, f"{path.relative_to(REPO)} cites {found}: notes outside the repository"
    for match in SHARED.finditer(text):
        start = match.start()
        assert ALLOWED_SHARED.match(text, start), (
            f"{path.relative_to(REPO)}: {text[start:start + 40]!r}: only ../shared/data (the default of "
            "$LINQ_DATA_DIR) may be named outside the repository")


def _relative_links(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks hold outputs, not links
    out = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # a URL (https:, mailto:) or an anchor on the same page
        out.append(target.split("#", 1)[0])
    return out


def test_every_relative_link_in_the_readme_is_a_file_of_the_repository() -> None:
    links = _relative_links(README)
    assert links, "the README links into docs/"
    for link in links:
        target = (REPO / link).resolve()
        assert target.is_relative_to(REPO), f"README.md links outside the repository: {link}"
        assert target.is_file(), f"README.md links to {link}, which is not a file of the repository"


def test_links_from_the_docs_into_the_repository_resolve() -> None:
    """Also checked by the strict build; this names the page without needing mkdocs."""
    for page in sorted(DOCS.rglob("*.md")):
        for link in _relative_links(page):
            if not link:
                continue
            target = (page.parent / link).resolve()
            assert target.is_relative_to(REPO), f"{page.relative_to(REPO)} links outside the repository: {link}"
            assert target.exists(), f"{page.relative_to(REPO)} links to {link}, which does not exist"
