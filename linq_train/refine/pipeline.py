"""``refine(config)``: craft -> leakage -> teacher -> filter -> mine -> synthetic -> DatasetDict and report.

Each stage is resumable (see :mod:`linq_train.store`): a stage whose fingerprint matches its stored record is
read back, not recomputed, and the teacher and generator load only when a stage that needs them runs.
Every stage records what it kept and dropped, and why, per task; the report gathers them.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from linq_eval.core.files import atomic_write_text
from linq_eval.core.instructions import load_instructions
from linq_train.refine.config import RefineConfig, load_config
from linq_train.refine.craft import TaskData, craft
from linq_train.schema import Example
from linq_train.store import StageStore, fingerprint

logger = logging.getLogger(__name__)

Dropped = list[tuple[Example, str]]
STAGES = ("craft", "leakage", "teacher", "filter", "mine", "synthetic")
# Part of the craft fingerprint: runs crafted under an older instruction policy (the table's generic entry for
# our collections) are recomputed, not read back, since every later stage embeds with those instructions.
INSTRUCTION_POLICY = "evaluation prefix_for on mteb metadata"


@dataclass
class RefineResult:
    """Where the outputs are, and the report (also in ``report_dir/report.json``)."""

    dataset_dir: Path
    report_dir: Path
    report: dict[str, Any]


class _Lazy:
    """Build an expensive object (teacher, leakage index) on first use only."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build, self._value = build, None

    def get(self) -> Any:  # noqa: ANN401 -- whatever build returns
        if self._value is None:
            self._value = self._build()
        return self._value


def _section(model: BaseModel) -> dict[str, Any]:
    # only what the user set: a new optional field does not invalidate finished stages
    return model.model_dump(mode="json", exclude_defaults=True)


_LEAK = re.compile(r"^(query|positive) (exact|near-duplicate) ")


def _reason_category(reason: str) -> str:
    # leakage reasons carry the matching evaluation text's origin; the tally groups by kind only
    return " ".join(reason.split()[:2]) if _LEAK.match(reason) else reason


def _record(kept: list[Example], dropped: Dropped, n_in: int | None, seconds: float,
            notes: dict[str, int] | None = None) -> dict[str, Any]:
    tasks = sorted({e.task for e in kept} | {e.task for e, _ in dropped})
    per_task = {t: {"in": sum(e.task == t for e in kept) + sum(e.task == t for e, _ in dropped),
                    "kept": sum(e.task == t for e in kept),
                    "dropped": dict(Counter(_reason_category(r) for e, r in dropped if e.task == t))} for t in tasks}
    return {"in": len(kept) + len(dropped) if n_in is None else n_in, "kept": len(kept),
            "dropped": dict(Counter(_reason_category(r) for _, r in dropped)), "per_task": per_task,
            **({"notes": notes} if notes else {}), "seconds": round(seconds, 2)}


class _Run:
    """One refinement run: its config, stage store and lazily loaded models."""

    def __init__(self, cfg: RefineConfig, force: bool) -> None:
        self.cfg, self.force = cfg, force
        self.table = load_instructions(cfg.instructions)
        self.data_dir = cfg.resolved_data_dir()
        self.store = StageStore(cfg.resolved_output_dir())
        self.records: dict[str, dict[str, Any]] = {}
        self.teacher = _Lazy(self._load_teacher)
        self.index = _Lazy(self._build_index)

    def _load_teacher(self) -> Any:  # noqa: ANN401 -- a LinqEncoder
        from linq_train.refine.teacher import load_teacher

        return load_teacher(self.cfg.teacher, self.cfg.instructions)

    def _build_index(self) -> Any:  # noqa: ANN401 -- a LeakageIndex
        from linq_train.refine.leakage import build_index

        return build_index(self.cfg.leakage, self.data_dir)

    def stage(self, name: str, stamp: str, compute: Callable[[Path], tuple]) -> list[Example]:
        """Run ``compute(folder)`` unless the stage already finished with this fingerprint.

        ``compute`` returns (kept, [(dropped, reason)], examples in or None for kept + dropped[, notes]).
        """
        record = None if self.force else self.store.finished(name, stamp)
        if record is not None:
            logger.info("%s: finished earlier, read back (%d examples)", name, record["kept"])
            self.records[name] = {**record, "resumed": True}
            return self.store.examples(name)
        logger.info("%s: running", name)
        folder = self.store.begin(name)
        start = time.perf_counter()
        kept, dropped, n_in, *notes = compute(folder)
        with (folder / "dropped.jsonl").open("w", encoding="utf-8") as handle:
            for example, reason in dropped:
                handle.write(json.dumps({"task": example.task, "query": example.query, "positive_id":
                                         example.positive_id, "source": example.source, "reason": reason},
                                        ensure_ascii=False) + "\n")
        record = self.store.finish(name, stamp, kept, _record(kept, dropped, n_in, time.perf_counter() - start,
                                                                *notes))
        self.records[name] = {**record, "resumed": False}
        return kept

    # -- the stages --------------------------------------------------------------------------------
    def craft(self) -> tuple[dict[str, TaskData], str]:
        cfg = self.cfg
        stamp = fingerprint("craft", [(s.kind, _section(s)) for s in cfg.sources], str(self.data_dir),
                             self.table.checksum(), cfg.seed, INSTRUCTION_POLICY)
        tasks: dict[str, TaskData] = {}

        def compute(folder: Path) -> tuple[list[Example], Dropped, None]:
            tasks.update(craft(cfg.sources, self.data_dir, self.table, cfg.seed))
            pools = {t.task: {"task_type": t.task_type, "instruction": t.instruction, "corpus": t.corpus}
                     for t in tasks.values()}
            atomic_write_text(folder / "pools.json", json.dumps(pools, ensure_ascii=False))
            return [e for t in tasks.values() for e in t.examples], [], None

        examples = self.stage("craft", stamp, compute)
        if not tasks:  # resumed: the pools come back from disk
            pools = json.loads((self.store.folder("craft") / "pools.json").read_text(encoding="utf-8"))
            tasks = {name: TaskData(name, p["task_type"], p["instruction"], p["corpus"]) for name, p in pools.items()}
        for task in tasks.values():
            task.examples = [e for e in examples if e.task == task.task]
        return tasks, stamp

    def leakage(self, examples: list[Example], upstream: str) -> tuple[list[Example], str]:
        from linq_train.refine.leakage import guard

        stamp = fingerprint("leakage", upstream, _section(self.cfg.leakage))
        return self.stage("leakage", stamp, lambda _: (*guard(examples, self.index.get()), None)), stamp

    def teacher_stage(self, tasks: dict[str, TaskData], examples: list[Example], upstream: str
                      ) -> tuple[list[Example], str]:
        from linq_train.refine.teacher import embed_task, score_examples

        stamp = fingerprint("teacher", upstream, _section(self.cfg.teacher))

        def compute(folder: Path) -> tuple[list[Example], Dropped, None]:
            for name, task in tasks.items():
                mine = [e for e in examples if e.task == name]
                emb = embed_task(self.teacher.get(), task, mine)
                emb.save(folder, name)
                score_examples(mine, emb)
            return examples, [], None

        return self.stage("teacher", stamp, compute), stamp

    def filter_stage(self, examples: list[Example], upstream: str) -> tuple[list[Example], str]:
        from linq_train.refine.filter import apply_filter

        stamp = fingerprint("filter", upstream, _section(self.cfg.filter))
        return self.stage("filter", stamp, lambda _: (*apply_filter(examples, self.cfg.filter), None)), stamp

    def mine_stage(self, tasks: dict[str, TaskData], examples: list[Example], upstream: str) -> list[Example]:
        stamp = fingerprint("mine", upstream, _section(self.cfg.mining))
        notes: Counter[str] = Counter()
        return self.stage("mine", stamp, lambda _: (*self._mine(tasks, examples, notes), None, dict(notes)))

    def _mine(self, tasks: dict[str, TaskData], examples: list[Example], notes: Counter[str] | None = None
              ) -> tuple[list[Example], Dropped]:
        from linq_train.refine.negatives import mine, mine_with_sentence_transformers
        from linq_train.refine.teacher import Embeddings

        kept: list[Example] = []
        dropped: Dropped = []
        for name, task in tasks.items():
            mine_ = [e for e in examples if e.task == name]
            if self.cfg.mining.engine == "sentence-transformers":
                k, d = mine_with_sentence_transformers(mine_, task, self.teacher.get(), self.cfg.mining)
            else:
                emb = Embeddings.load(self.store.folder("teacher"), name)
                if mine_ and {e.query for e in mine_} - set(emb.queries):  # synthetic queries: embed them
                    from linq_train.refine.teacher import embed_queries

                    emb = embed_queries(self.teacher.get(), task, list(dict.fromkeys(e.query for e in mine_)), emb)
                k, d = mine(mine_, emb, task.corpus, self.cfg.mining, notes)
            kept += k
            dropped += d
        return kept, dropped

    def synthetic(self, tasks: dict[str, TaskData], upstream: str) -> list[Example]:
        cfg = self.cfg
        stamp = fingerprint("synthetic", upstream, _section(cfg.synthetic),
                             _section(cfg.mining), _section(cfg.leakage))
        return self.stage("synthetic", stamp, lambda _: self._synthetic(tasks))

    def _synthetic(self, tasks: dict[str, TaskData]) -> tuple[list[Example], Dropped, int]:
        from linq_train.refine.leakage import guard
        from linq_train.refine.prompts import load_template
        from linq_train.refine.synthetic import (
            candidates,
            generate,
            load_generator,
            pick_documents,
            round_trip,
        )
        from linq_train.refine.teacher import Embeddings, embed_queries

        cfg = self.cfg.synthetic
        if not cfg.enabled or not cfg.tasks:
            return [], [], 0
        template = load_template(cfg.template)
        model, tokenizer = load_generator(cfg)
        kept: list[Example] = []
        dropped: Dropped = []
        generated = 0
        for name in cfg.tasks:
            task = tasks[name]
            doc_ids = pick_documents(task, cfg.docs_per_task, cfg.seed)
            raw = generate(model, tokenizer, template, [task.corpus[d] for d in doc_ids], cfg, f"{name} synthetic")
            generated += len(raw)
            found, lost = candidates(task, doc_ids, raw, cfg, template.name)
            found, leaked = guard(found, self.index.get())
            dropped += lost + leaked
            if found:
                emb = embed_queries(self.teacher.get(), task, list(dict.fromkeys(e.query for e in found)),
                                    Embeddings.load(self.store.folder("teacher"), name))
                found, missed = round_trip(found, emb, cfg.round_trip_top_k)
                dropped += missed
                found, short = self._mine({name: task}, found)
                dropped += short
            kept += found
        return kept, dropped, generated


def refine(config: RefineConfig | str | Path, *, force: bool = False) -> RefineResult:
    """Run (or resume) the refinement a config describes; see the module docstring.

    Args:
        config: a :class:`RefineConfig`, or the path of a YAML/TOML file.
        force: recompute every stage even when a finished one matches.

    Returns:
        The output DatasetDict folder (one split per task), the report folder and the report.

    Raises:
        LinqEvalError: bad config or data (one line), before any model loads.
    """
    from linq_train.refine.output import write_dataset
    from linq_train.refine.report import write_report

    cfg = config if isinstance(config, RefineConfig) else load_config(config)
    run = _Run(cfg, force)
    tasks, stamp = run.craft()
    examples, stamp = run.leakage([e for t in tasks.values() for e in t.examples], stamp)
    examples, teacher_print = run.teacher_stage(tasks, examples, stamp)
    scored = examples
    examples, stamp = run.filter_stage(examples, teacher_print)
    mined = run.mine_stage(tasks, examples, stamp)
    synthetic = run.synthetic(tasks, teacher_print)  # needs the teacher's pool embeddings, not the filter
    final = mined + synthetic
    dataset_dir = write_dataset(final, sorted(tasks), cfg.resolved_output_dir() / "dataset")
    report = write_report(cfg, run.records, scored, final, dataset_dir)
    return RefineResult(dataset_dir, cfg.resolved_report_dir(), report)
