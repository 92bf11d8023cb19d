"""Calibrate ``linq-eval gate`` by simulation on stored per-query scores of real systems (statistics.md).

For every shipped light set, real systems' per-query nDCG@10 (the light validation panel: all-MiniLM-L6-v2 at
256 and 64 tokens, BM25) give the paired differences d_q of a "near" pair (the same model truncated: what a
checkpoint a few steps on looks like) and a "far" pair (dense vs lexical). Each simulated gate draws the light
set's queries again with replacement (a query resample) and adds the d_q of the pair, centred to a true mean
of exactly 0 (A/A: the same quality) or shifted to -2 x delta (a known regression); the gate's own rule
(``gate_rule.decide``) then decides. Reported per light set and pair:

- false-fail rate on A/A (target <= 5%) and power = P(FAIL) at a true drop of 2 x delta (target >= 80%);
- how often a true 2 x delta regression PASSES (the quiet pass a significance gate makes; should be ~0);
- the queries that reach 80% power (the MDE formula solved for n at effect delta, which the rule needs for
  its CI to clear -delta), checked by simulating at that size;
- plus the gate on real A/A reruns (same checkpoint, batch 7 vs 32), from ``results/compare``.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/gate_calibration.py [--sims 400 --sims-needed 100 --delta 0.01]

Writes ``results/gate/calibration.json`` and prints the README table. The bootstrap and permutation tests use
1,000 resamples per simulated gate (the gate itself uses 10,000); 400 gates per rate at the light sets' sizes
(+/- 2 points) and 100 at the sizes needed (+/- 4 points): enough to check the targets, not to polish them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PAIRS = {"near": ("minilm", "minilm-64tok"), "far": ("minilm", "bm25")}
HELD_OUT = ("ADIRetrieval-light", "MedlineRetrieval-light", "CISIRetrieval-light", "LegalBenchCorporateLobbying-light")


def light_per_query() -> dict[str, dict[str, dict[str, float]]]:
    """light set -> system -> query -> nDCG@10, for the systems of PAIRS, on every shipped light set."""
    import mteb

    from linq_eval.light_manifest import available, load_manifest, manifest_path
    from linq_eval.light_validate import PANEL, light_scores, prepare

    wanted = {name for pair in PAIRS.values() for name in pair}
    panel = tuple(s for s in PANEL if s.name in wanted)
    out = {}
    for name in available():
        manifest = load_manifest(manifest_path(name))
        task = mteb.get_task(manifest.source_task)
        task.load_data()
        t0 = time.perf_counter()
        out[name] = light_scores(prepare(task, panel=panel, split=manifest.split), manifest)
        print(f"{name}: scored in {time.perf_counter() - t0:.0f}s", flush=True)
    return out


def simulate(tasks: dict[str, np.ndarray], base: dict[str, np.ndarray], shift: float, n: dict[str, int], sims: int,
             rule: Any, seed: int) -> dict[str, float]:  # noqa: ANN401 -- a GateRule
    """Verdict rates of ``sims`` gates: per task, n queries resampled; candidate = baseline + centred d + shift."""
    from linq_eval.gate_rule import decide

    rng = np.random.default_rng(seed)
    counts = {"PASS": 0, "FAIL": 0, "CANNOT DECIDE": 0}
    for _ in range(sims):
        pairs = {}
        for t, d in tasks.items():
            idx = rng.integers(0, d.size, n[t])
            centred = d - d.mean()
            pairs[t] = (base[t][idx] + centred[idx] + shift, base[t][idx])
        counts[decide(pairs, rule).verdict] += 1
    return {k: v / sims for k, v in counts.items()}


def calibrate(scores: dict[str, dict[str, dict[str, float]]], groups: dict[str, list[str]], sims: int, delta: float,
              sims_needed: int, seed: int = 0) -> list[dict[str, Any]]:
    from linq_eval.gate_rule import GateRule
    from linq_eval.stats import queries_needed

    rule = GateRule(delta=delta, n_resamples=1000, seed=seed)
    rows = []
    for group, names in groups.items():
        for pair, (a, b) in PAIRS.items():
            base, diffs = {}, {}
            for name in names:
                queries = sorted(scores[name][a])
                base[name] = np.array([scores[name][a][q] for q in queries])
                diffs[name] = np.array([scores[name][b][q] for q in queries]) - base[name]
            n = {t: d.size for t, d in diffs.items()}
            # the macro's standard error at today's sizes -> one sd for "queries needed" in today's proportions
            se = np.sqrt(sum(d.var(ddof=1) / d.size for d in diffs.values())) / len(diffs)
            total = sum(n.values())
            needed = queries_needed(float(se * np.sqrt(total)), delta) if se > 0 else 0
            scale = max(needed / total, 1.0)
            n_needed = {t: int(np.ceil(k * scale)) for t, k in n.items()}
            aa = simulate(diffs, base, 0.0, n, sims, rule, seed)
            drop = simulate(diffs, base, -2 * delta, n, sims, rule, seed + 1)
            at_needed = simulate(diffs, base, -2 * delta, n_needed, sims_needed, rule, seed + 2)
            aa_needed = simulate(diffs, base, 0.0, n_needed, sims_needed, rule, seed + 3)
            rows.append({"light_sets": group, "pair": f"{a} vs {b}", "queries": total,
                         "sd_d": float(np.mean([d.std(ddof=1) for d in diffs.values()])),
                         "mde": float((1.96 + 0.8416) * se), "false_fail": aa["FAIL"], "aa_pass": aa["PASS"],
                         "power_2delta": drop["FAIL"], "regression_passes": drop["PASS"],
                         "queries_needed": int(sum(n_needed.values())), "power_at_needed": at_needed["FAIL"],
                         "false_fail_at_needed": aa_needed["FAIL"], "aa_pass_at_needed": aa_needed["PASS"]})
            r = rows[-1]
            print(f"{group:40s} {pair:4s} n={total:4d} sd={r['sd_d']:.3f} false-fail {r['false_fail']:.3f} "
                  f"power {r['power_2delta']:.3f} quiet-pass {r['regression_passes']:.3f} -> {r['queries_needed']} "
                  f"queries: power {r['power_at_needed']:.3f}, false-fail {r['false_fail_at_needed']:.3f}", flush=True)
    return rows


def real_aa(delta: float) -> list[dict[str, Any]]:
    """The gate on real A/A reruns stored by ``linq-eval compare`` (same checkpoint, batch 7 vs 32)."""
    from linq_eval.gate_rule import GateRule, decide
    from linq_eval.per_query import read_per_query

    rows = []
    for folder in (REPO / "results" / "compare", REPO / "results" / "compare" / "adi"):
        report = folder / "compare.json"
        if not report.is_file():
            continue
        for run in sorted((folder / "runs").glob("*-aa.json")):
            aa = json.loads(run.read_text())
            ref = json.loads(run.with_name(run.name.replace("-aa.json", ".json")).read_text())
            if aa.get("status") != "ok" or ref.get("status") != "ok":
                continue
            pairs = {}
            for task, path in aa["per_query"].items():
                a, b = read_per_query(path), read_per_query(ref["per_query"][task])
                qs = sorted(b)
                pairs[task] = ([a[q] for q in qs], [b[q] for q in qs])
            d = decide(pairs, GateRule(delta=delta))
            rows.append({"system": aa["job"]["model"], "tasks": sorted(pairs), "verdict": d.verdict,
                         "difference": d.difference, "ci": [d.ci_low, d.ci_high]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=400)
    parser.add_argument("--sims-needed", type=int, default=100,
                        help="simulated gates at the queries needed (thousands of queries each: slower)")
    parser.add_argument("--delta", type=float, default=0.01)
    parser.add_argument("--out", default=str(REPO / "results" / "gate" / "calibration.json"))
    args = parser.parse_args()
    t0 = time.perf_counter()
    scores = light_per_query()
    groups = {name: [name] for name in sorted(scores)}
    groups["held-out macro (" + ", ".join(n.removesuffix("Retrieval-light") for n in HELD_OUT) + ")"] = list(HELD_OUT)
    rows = calibrate(scores, groups, args.sims, args.delta, args.sims_needed)
    aa = real_aa(args.delta)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"delta": args.delta, "sims": args.sims, "sims_needed": args.sims_needed, "pairs": PAIRS, "rows": rows, "real_aa": aa,
                               "seconds": time.perf_counter() - t0}, indent=1) + "\n")
    print("\n| light set(s) | pair | queries | false-fail (A/A) | power at 2δ | 2δ drop passed | queries for 80% "
          "power | power / false-fail there |\n|---|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['light_sets']} | {r['pair']} | {r['queries']} | {r['false_fail']:.1%} | {r['power_2delta']:.1%} | "
              f"{r['regression_passes']:.1%} | {r['queries_needed']} | {r['power_at_needed']:.0%} / "
              f"{r['false_fail_at_needed']:.1%} |")
    for r in aa:
        print(f"real A/A rerun {r['system']} on {', '.join(r['tasks'])}: {r['verdict']} ({r['difference']:+.4f}, "
              f"CI [{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}])")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
