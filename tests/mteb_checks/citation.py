"""mteb's citation check, vendored from mteb's test suite (not shipped in its wheel).

Source: embeddings-benchmark/mteb tests/test_validate_metadata/test_citation_formatting.py (mteb 2.26.x): a
citation is either empty or already in the canonical form bibtexparser writes.
"""

from __future__ import annotations

import bibtexparser
from bibtexparser.bwriter import BibTexWriter


def format_bibtex(text: str) -> str | None:
    """The canonical form of a BibTeX entry (None when ``text`` holds none)."""
    parser = bibtexparser.bparser.BibTexParser(common_strings=True, ignore_nonstandard_types=False,
                                               interpolate_strings=False)
    database = bibtexparser.loads(text, parser)
    if not database.entries:
        return None
    writer = BibTexWriter()
    writer.indent = "  "
    writer.comma_first = False
    writer.add_trailing_comma = True
    return writer.write(database).strip()


def citation_is_canonical(citation: str | None) -> bool:
    text = (citation or "").strip()
    return not text or format_bibtex(text) == text
