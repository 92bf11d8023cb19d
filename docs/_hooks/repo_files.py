"""mkdocs hook: links from the docs to files of the repository (``../results/...``, ``../configs/...``).

The pages link measured results, configs and examples with paths relative to ``docs/`` (``../results/x.md``),
which work as they are when the files are read on a code host or in a checkout. mkdocs only knows the files
under ``docs/``, so here every such link whose target exists is copied into the site under the same path
under ``repo/`` (``repo/results/x.md`` is rendered as a page, other files are copied as they are) and the link
is rewritten to point at the copy. A link to a file that does not exist is left alone, so ``mkdocs build --strict`` fails on
it: no link into the repository can rot unnoticed.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

# ](../path) and ](../path#anchor) in Markdown links and images
_LINK = re.compile(r"\]\((\.\./[^)\s#]+)(#[^)\s]*)?\)")
PREFIX = "repo"  # where the copies live in the site, apart from the pages
_copies: dict[str, str] = {}  # repository path -> the copy's path in the site


def _copy(rel: str, root: Path, config) -> File:  # noqa: ANN001 -- mkdocs' config object
    generated = getattr(File, "generated", None)  # mkdocs >= 1.6
    if generated is not None:
        return generated(config, f"{PREFIX}/{rel}", abs_src_path=str(root / rel))
    return File(rel, src_dir=str(root), dest_dir=config["site_dir"], use_directory_urls=config["use_directory_urls"])


def _roots(config) -> tuple[Path, Path]:  # noqa: ANN001 -- mkdocs' config object
    docs = Path(config["docs_dir"]).resolve()
    return docs, docs.parent


def _repo_target(page_dir: Path, link: str, docs: Path, root: Path) -> str | None:
    """The repository path (posix, relative to the root) a ``../`` link points at, if it is a file outside docs/."""
    target = (page_dir / link).resolve()
    try:
        rel = target.relative_to(root)
    except ValueError:
        return None  # outside the repository: mkdocs reports it
    if rel.parts and rel.parts[0] == docs.name:
        return None  # a page of the site: mkdocs resolves it itself
    return rel.as_posix() if target.is_file() else None


def on_files(files, config):  # noqa: ANN001,ANN201 -- mkdocs' event signature
    docs, root = _roots(config)
    _copies.clear()
    for page in sorted(docs.rglob("*.md")):
        for match in _LINK.finditer(page.read_text(encoding="utf-8")):
            rel = _repo_target(page.parent, match.group(1), docs, root)
            if rel is not None and rel not in _copies:
                copy = _copy(rel, root, config)
                files.append(copy)
                _copies[rel] = copy.src_uri
    return files


def on_page_markdown(markdown, page, config, files):  # noqa: ANN001,ANN201 -- mkdocs' event signature
    docs, root = _roots(config)
    if not (docs / page.file.src_uri).is_file():
        return markdown  # a copied repository file: its own links are left as they are
    page_dir = (docs / page.file.src_uri).parent
    here = posixpath.dirname(page.file.src_uri) or "."

    def rewrite(match: re.Match) -> str:
        rel = _repo_target(page_dir, match.group(1), docs, root)
        if rel is None or rel not in _copies:
            return match.group(0)
        return f"]({posixpath.relpath(_copies[rel], here)}{match.group(2) or ''})"

    return _LINK.sub(rewrite, markdown)
