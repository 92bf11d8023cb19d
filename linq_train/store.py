"""Where refinement stages keep their outputs, and how a finished stage is recognised (resumability).

Each stage has a folder ``<output_dir>/stages/<name>/`` with ``examples.jsonl`` (one
:class:`~linq_train.schema.Example` per line, any task), optional extra files (corpora, embeddings), and
``stage.json`` written last: its fingerprint covers the stage's own config section and every upstream
fingerprint, so changing a setting recomputes exactly the stages downstream of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from linq_eval.core.files import atomic_write_text
from linq_train.schema import Example

logger = logging.getLogger(__name__)

STAGE_FILE = "stage.json"


def fingerprint(*parts: Any) -> str:  # noqa: ANN401 -- any JSON-serialisable parts
    """sha256 of JSON-serialisable parts (upstream fingerprints and config sections)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class StageStore:
    """The stage folders of one refinement run."""

    def __init__(self, output_dir: Path) -> None:
        self.root = Path(output_dir) / "stages"

    def folder(self, name: str) -> Path:
        return self.root / name

    def finished(self, name: str, stamp: str) -> dict[str, Any] | None:
        """The stage's record if it finished with this fingerprint, else None."""
        path = self.folder(name) / STAGE_FILE
        if not path.is_file():
            return None
        record = json.loads(path.read_text(encoding="utf-8"))
        return record if record.get("fingerprint") == stamp else None

    def begin(self, name: str) -> Path:
        """An empty folder for a stage about to (re)compute."""
        folder = self.folder(name)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    def finish(self, name: str, stamp: str, examples: list[Example], record: dict[str, Any]) -> dict[str, Any]:
        """Write the examples, then ``stage.json`` (last, so a killed stage never looks finished)."""
        folder = self.folder(name)
        with (folder / "examples.jsonl").open("w", encoding="utf-8") as handle:
            for example in examples:
                handle.write(json.dumps(asdict(example), ensure_ascii=False) + "\n")
        record = {"stage": name, "fingerprint": stamp, **record}
        atomic_write_text(folder / STAGE_FILE, json.dumps(record, indent=2))
        return record

    def examples(self, name: str) -> list[Example]:
        with (self.folder(name) / "examples.jsonl").open(encoding="utf-8") as handle:
            return [Example(**json.loads(line)) for line in handle if line.strip()]
