"""Where does the trained checkpoint's 4-bit drop come from? The adapter kept beside an NF4 base against the
adapter merged into the full-precision weights before they are quantised.

The trajectory study evaluates a checkpoint at 4 bits as ``linq-eval`` does: the base model quantised to NF4 and
the LoRA adapter applied on top, unmerged (its product computed in full precision). At the base model 4 bits
cost nothing measurable, yet the final checkpoint loses 3.5 points macro. This script merges the study's final
adapter into the base weights at full precision, saves that model, evaluates it in each of the study's 4-bit
modes (one cell per mode, in a process of its own, exactly as the study's cells), and compares per query with
the study's own cells of the same checkpoint: merged-then-NF4 minus the truth, adapter-on-NF4 minus the truth,
and the two against each other (paired sign-flip p with Holm over the tasks, 95% bootstrap CI, the
task-stratified macro CI; ``trajectory.paired_difference``).

    HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/merge_before_quantize.py \
        configs/trajectory_cpu.yaml

Needs the study's final checkpoint in the truth mode and the 4-bit modes (``benchmarks/trajectory.py``). Writes
``<out>/merge_before_quantize/`` (the cells, ``merge_before_quantize.json`` and ``.md``); resumes per cell.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import trajectory  # the sibling study script: config, cells, the paired test (benchmarks/ is on the path)
import yaml

from linq_eval.core.files import atomic_write_json, atomic_write_text, read_json_file

MERGED = "merged-final"


def merged_model(base_model: str, adapter: Path, target: Path, dtype: str = "float32") -> Path:
    """``base_model`` with ``adapter`` merged at full precision (fp32 unless told: the 16-bit default is bf16 on CPUs
    that have it), saved as a model folder (built once): the loader's own merge (``linq-eval --merge-adapter``)."""
    from linq_eval.models.build import merged_model as merge

    return merge(base_model, adapter, dtype=dtype, target=target)


def final_cells(out: Path, truth: str) -> tuple[str, dict[str, dict]]:
    """The study's final checkpoint (the truth cell of the highest step) and its cells, mode -> cell."""
    trained = [p for p in (out / "cells").glob(f"*/{truth}.json") if p.parent.name != trajectory.REFERENCE]
    finals = sorted(trained, key=lambda p: read_json_file(p)["step"])
    if not finals or read_json_file(finals[-1])["checkpoint"] == trajectory.BASE:
        raise SystemExit("the study's final checkpoint is not evaluated yet: run benchmarks/trajectory.py first")
    folder = finals[-1].parent
    return folder.name, {p.stem: read_json_file(p) for p in folder.glob("*.json")}


def _row(label: str, d: dict[str, Any]) -> str:
    m = d["macro"]
    tasks = list(d["tasks"])  # the study's order (a light mode's: its light sets, in the same order)
    cells = " | ".join(f"{d['tasks'][t]['difference']:+.4f} (p {d['tasks'][t]['p_holm']:.3f})" for t in tasks)
    return f"| {label} | {m['difference']:+.4f} | [{m['ci95'][0]:+.4f}, {m['ci95'][1]:+.4f}] | {cells} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the trajectory study's config (YAML)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from linq_eval.core.quiet import quiet_libraries

    quiet_libraries()  # the libraries' bars and INFO logs off, in the cells' processes too: the log holds ours
    cfg = trajectory.load_study(args.config)
    if cfg.light_dir:
        import os

        os.environ["LINQ_LIGHT_DIR"] = str(trajectory.repo_path(cfg.light_dir))
    work, out = trajectory.repo_path(cfg.work), trajectory.repo_path(cfg.out)
    checkpoint, study = final_cells(out, cfg.truth)
    quantised = [m for m in cfg.modes if m.bits < 16 and m.name in study]
    if not quantised:
        raise SystemExit(f"no quantised mode of {checkpoint} is evaluated yet: run benchmarks/trajectory.py first")
    base_model = yaml.safe_load(trajectory.repo_path(cfg.fit).read_text("utf-8"))["base_model"]
    adapter = trajectory.repo_path(study[cfg.truth]["adapter"])
    merged = merged_model(base_model, adapter, work / "merged" / checkpoint, dtype=cfg.dtype or "float32")
    here = out / "merge_before_quantize"
    point = trajectory.Checkpoint(MERGED, study[cfg.truth]["step"], None)
    rows, record = [], {"checkpoint": checkpoint, "adapter": str(adapter), "base_model": base_model, "modes": {}}
    tasks = list(cfg.tasks)  # columns; a light mode's rows hold the light sets of the same tasks, in this order
    for mode in quantised:
        cell = trajectory.evaluate_cell(cfg, str(merged), point, mode, work / "merge_before_quantize", here)
        truth = study[next(m.name for m in cfg.modes if m.light == mode.light and m.bits == 16)]  # same tasks
        adapter_cell = study[mode.name]  # all three cells of a mode hold the same tasks
        diffs = {"merged_minus_16": trajectory.cell_difference(cell, truth),
                 "adapter_minus_16": trajectory.cell_difference(adapter_cell, truth),
                 "merged_minus_adapter": trajectory.cell_difference(cell, adapter_cell)}
        record["modes"][mode.name] = {"sixteen_bit_mode": truth["mode"]["name"], **diffs,
                                      "cost": {"merged": cell["cost"], "adapter": adapter_cell["cost"]}}
        rows += [_row(f"{mode.name}: adapter on the NF4 base, minus 16 bits", diffs["adapter_minus_16"]),
                 _row(f"{mode.name}: merged, then NF4, minus 16 bits", diffs["merged_minus_16"]),
                 _row(f"{mode.name}: merged minus adapter", diffs["merged_minus_adapter"])]
    atomic_write_json(here / "merge_before_quantize.json", record)
    head = (f"# 4 bits on the trained checkpoint `{checkpoint}`: adapter beside NF4, or merged before NF4\n\n"
            "Per query, paired (sign-flip p with Holm over the tasks; 95% bootstrap CI of the macro, "
            "task-stratified); each 4-bit mode against the 16-bit mode on the same tasks.\n\n"
            f"| comparison | macro | 95% CI | {' | '.join(tasks)} |\n|---|---:|---|{'---|' * len(tasks)}\n")
    atomic_write_text(here / "merge_before_quantize.md", head + "\n".join(rows) + "\n")
    print(head + "\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(trajectory.run_script(main))
