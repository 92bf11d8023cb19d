"""Few-shot prompt templates for synthetic queries (data files in ``linq_train/templates/*.yaml``).

A template has a ``system`` text, a ``user`` text with ``{document}``, and ``shots`` of (document, query)
shown as earlier chat turns. This module only builds prompts and cleans generations: pure text, no model.
"""

from __future__ import annotations

import difflib
import logging
import re
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from linq_eval.core.errors import LinqEvalError

logger = logging.getLogger(__name__)


class Shot(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    document: str
    query: str


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    system: str = ""
    user: str = Field(pattern=r"\{document\}")
    shots: list[Shot] = Field(default_factory=list)

    def messages(self, document: str) -> list[dict[str, str]]:
        """Chat messages: system, then each shot as a user/assistant turn, then the document."""
        out = [{"role": "system", "content": self.system}] if self.system else []
        for shot in self.shots:
            out += [{"role": "user", "content": self.user.format(document=shot.document)},
                    {"role": "assistant", "content": shot.query}]
        return out + [{"role": "user", "content": self.user.format(document=document)}]

    def plain(self, document: str) -> str:
        """The same prompt as plain text, for tokenizers without a chat template."""
        turns = [self.system] if self.system else []
        turns += [f"{self.user.format(document=s.document)}\nQuery: {s.query}" for s in self.shots]
        return "\n\n".join([*turns, f"{self.user.format(document=document)}\nQuery:"])


def builtin_templates() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in resources.files("linq_train").joinpath("templates").iterdir()
                  if p.name.endswith(".yaml"))


def load_template(name_or_path: str) -> Template:
    """A built-in template by name, or a YAML file; one-line errors."""
    import yaml

    path = Path(name_or_path).expanduser()
    if path.suffix in {".yaml", ".yml"}:
        if not path.is_file():
            raise LinqEvalError(f"template file {path} does not exist")
        text, origin = path.read_text(encoding="utf-8"), str(path)
    elif name_or_path in builtin_templates():
        text = resources.files("linq_train").joinpath(f"templates/{name_or_path}.yaml").read_text(encoding="utf-8")
        origin = f"built-in template {name_or_path}"
    else:
        raise LinqEvalError(f"unknown template {name_or_path!r}: use one of {builtin_templates()} or a .yaml path")
    try:
        return Template.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        raise LinqEvalError(f"{origin}: not a valid template ({str(exc).splitlines()[0]})") from None


_LEAD = re.compile(r"^\s*(?:query|question|search query)\s*[:\-]\s*", re.IGNORECASE)


def clean(generated: str) -> str:
    """The first non-empty line, without a ``Query:`` lead, surrounding quotes or extra spaces."""
    line = next((ln for ln in generated.splitlines() if ln.strip()), "")
    return " ".join(_LEAD.sub("", line).strip().strip("\"'`").split())


def copy_overlap(query: str, document: str) -> float:
    """Share of the query's words that form one run copied verbatim from the document."""
    q, d = query.lower().split(), document.lower().split()
    if not q:
        return 0.0
    match = difflib.SequenceMatcher(None, q, d, autojunk=False).find_longest_match(0, len(q), 0, len(d))
    return match.size / len(q)


def repeats(query: str, size: int = 3) -> bool:
    """Whether a run of ``size`` words occurs twice: small LMs loop ("in magnetic shock flow in magnetic ...")."""
    words = query.lower().split()
    grams = [tuple(words[i : i + size]) for i in range(len(words) - size + 1)]
    return len(grams) != len(set(grams))
