"""Calibrate ``linq-eval gate`` by simulation on stored per-query scores of real systems (docs/stats.md).

For every shipped light set, real systems' per-query nDCG@10 (the light validation panel: all-MiniLM-L6-v2 at
256 and 64 tokens, BM25) give the paired differences d_q of a "near" pair (the same model truncated: what a
checkpoint a few steps on looks like) and a "far" pair (dense vs lexical). Each simulated gate draws the light
set's queries again with replacement (a query resample) and adds the d_q of the pair, centred to a true mean
of exactly 0 (A/A: the same quality) or shifted to -2 x delta (a known regression); the gate's own rule
(``gate_rule.decide``) then decides. Reported per light set and pair:

- false-fail rate on A/A (target <= 5%) and power = P(FAIL) at a true drop of 2 x delta (target >= 80%);
- how often a true 2 x delta regression PASSES (target <= 2.5%, the nominal one-sided error of the 95%
  interval's lower end; the quiet pass a significance gate makes);
- the queries that reach 80% power (the MDE formula solved for n at effect delta, which the rule needs for
  its CI to clear -delta), checked by simulating at that size (first interval method only: thousands of queries);
- plus the gate on real A/A reruns (same checkpoint, batch 7 vs 32), from ``results/compare``.

Each interval method given (``--methods``, default the gate's BCa) decides the very same simulated gates, so
their rates differ by the method alone. The run ends with the two targets checked per method at every shipped
light-set size (exit status 1 when the first method misses one).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/gate_calibration.py [--sims 400 --sims-needed 100 --delta 0.01]
        [--methods bca percentile studentized] [--only ADIRetrieval-light ...]

Writes ``results/gate/calibration.json`` (``--out``) and prints the table in docs/gate.md. The bootstrap and permutation
tests use 1,000 resamples per simulated gate (the gate itself uses 10,000); 400 gates per rate at the light sets'
sizes (+/- 2 points; +/- 0.8 at a rate of 2.5%) and 100 at the sizes needed (+/- 4 points): enough to check the
targets, not to polish them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PAIRS = {"near": ("minilm", "minilm-64tok"), "far": ("minilm", "bm25")}
HELD_OUT = ("ADIRetrieval-light", "MedlineRetrieval-light", "CISIRetrieval-light", "LegalBenchCorporateLobbying-light")
TARGETS = {"regression_passes": 0.025, "false_fail": 0.05}  # P(PASS | true drop 2 x delta), P(FAIL | A/A)


def light_per_query(only: list[str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """light set -> system -> query -> nDCG@10, for the systems of PAIRS, on every shipped light set (or ``only``)."""
    import mteb

    from linq_eval.core.light_manifest import available, load_manifest, manifest_path
    from linq_eval.light.validate import PANEL, light_scores, prepare

    wanted = {name for pair in PAIRS.values() for name in pair}
    panel = tuple(s for s in PANEL if s.name in wanted)
    out = {}
    for name in only or available():
        manifest = load_manifest(manifest_path(name))
        task = mteb.get_task(manifest.source_task)
        task.load_data()
        t0 = time.perf_counter()
        out[name] = light_scores(prepare(task, panel=panel, split=manifest.split), manifest)
        print(f"{name}: scored in {time.perf_counter() - t0:.0f}s", flush=True)
    return out


def simulate(tasks: dict[str, np.ndarray], base: dict[str, np.ndarray], shift: float, n: dict[str, int], sims: int,
             rules: list[Any], seed: int) -> list[dict[str, float]]:
    """Verdict rates of ``sims`` gates under each rule: per task, n queries resampled; candidate = baseline +
    centred d + shift. Every rule decides the same resampled gates."""
    from linq_eval.core.gate_rule import decide

    rng = np.random.default_rng(seed)
    counts = [{"PASS": 0, "FAIL": 0, "CANNOT DECIDE": 0} for _ in rules]
    for _ in range(sims):
        pairs = {}
        for t, d in tasks.items():
            idx = rng.integers(0, d.size, n[t])
            centred = d - d.mean()
            pairs[t] = (base[t][idx] + centred[idx] + shift, base[t][idx])
        for rule, count in zip(rules, counts, strict=True):
            count[decide(pairs, rule).verdict] += 1
    return [{k: v / sims for k, v in count.items()} for count in counts]


def calibrate(scores: dict[str, dict[str, dict[str, float]]], groups: dict[str, list[str]], sims: int, delta: float,
              sims_needed: int, methods: list[str], seed: int = 0) -> list[dict[str, Any]]:
    from linq_eval.core.gate_rule import GateRule
    from linq_eval.core.stats import queries_needed

    rules = [GateRule(delta=delta, n_resamples=1000, seed=seed, method=m) for m in methods]  # type: ignore[arg-type]
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
            aa_all = simulate(diffs, base, 0.0, n, sims, rules, seed)
            drop_all = simulate(diffs, base, -2 * delta, n, sims, rules, seed + 1)
            if sims_needed:  # thousands of queries per gate: the first method only
                [at_needed] = simulate(diffs, base, -2 * delta, n_needed, sims_needed, rules[:1], seed + 2)
                [aa_needed] = simulate(diffs, base, 0.0, n_needed, sims_needed, rules[:1], seed + 3)
            for i, (method, aa, drop) in enumerate(zip(methods, aa_all, drop_all, strict=True)):
                there_rates: dict[str, Any] = {"queries_needed": int(sum(n_needed.values()))}
                if i == 0 and sims_needed:
                    there_rates.update(power_at_needed=at_needed["FAIL"], false_fail_at_needed=aa_needed["FAIL"],
                                       aa_pass_at_needed=aa_needed["PASS"])
                rows.append({"light_sets": group, "pair": f"{a} vs {b}", "method": method, "queries": total,
                             "sd_d": float(np.mean([d.std(ddof=1) for d in diffs.values()])),
                             "mde": float((1.96 + 0.8416) * se), "false_fail": aa["FAIL"], "aa_pass": aa["PASS"],
                             "power_2delta": drop["FAIL"], "regression_passes": drop["PASS"], **there_rates})
                r = rows[-1]
                there = (f" -> {r['queries_needed']} queries: power {r['power_at_needed']:.3f}, false-fail "
                         f"{r['false_fail_at_needed']:.3f}" if "power_at_needed" in r else "")
                print(f"{group:40s} {pair:4s} {method:11s} n={total:4d} sd={r['sd_d']:.3f} false-fail "
                      f"{r['false_fail']:.3f} power {r['power_2delta']:.3f} quiet-pass {r['regression_passes']:.3f}"
                      f"{there}", flush=True)
    return rows


def check_targets(rows: list[dict[str, Any]], methods: list[str]) -> dict[str, dict[str, Any]]:
    """Per method: do the targets hold at every light-set size simulated (the worst row of each)?"""
    out = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        out[method] = {}
        for key, target in TARGETS.items():
            worst = max(mine, key=lambda r: r[key])
            out[method][key] = {"target": target, "worst": worst[key], "at": f"{worst['light_sets']} "
                                f"({worst['pair']}, {worst['queries']} queries)", "holds": worst[key] <= target}
    return out


def real_aa(delta: float) -> list[dict[str, Any]]:
    """The gate on real A/A reruns stored by ``linq-eval compare`` (same checkpoint, batch 7 vs 32)."""
    from linq_eval.core.files import read_json_file
    from linq_eval.core.gate_rule import GateRule, decide
    from linq_eval.core.per_query import read_per_query

    rows = []
    for folder in (REPO / "results" / "compare", REPO / "results" / "compare" / "adi"):
        report = folder / "compare.json"
        if not report.is_file():
            continue
        for run in sorted((folder / "runs").glob("*-aa.json")):
            aa = read_json_file(run)
            ref = read_json_file(run.with_name(run.name.replace("-aa.json", ".json")))
            if aa.get("status") != "ok" or ref.get("status") != "ok":
                continue
            files = [REPO / p for r in (aa, ref) for p in r["per_query"].values()]
            if not all(f.is_file() for f in files):  # the caches are not in the repository: rerun compare first
                print(f"real A/A rerun {run.name}: per-query files missing (run `linq-eval compare` again): skipped")
                continue
            pairs = {}
            for task, path in aa["per_query"].items():
                a, b = read_per_query(REPO / path), read_per_query(REPO / ref["per_query"][task])
                qs = sorted(b)
                pairs[task] = ([a[q] for q in qs], [b[q] for q in qs])
            d = decide(pairs, GateRule(delta=delta))
            rows.append({"system": aa["job"]["model"], "tasks": sorted(pairs), "verdict": d.verdict,
                         "difference": d.difference, "ci": [d.ci_low, d.ci_high]})
    return rows


def main() -> int:
    from linq_eval.core.files import atomic_write_json
    from linq_eval.core.light_manifest import available
    from linq_eval.core.stats import INTERVAL_METHODS, finite_or_none

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=400)
    parser.add_argument("--sims-needed", type=int, default=100,
                        help="simulated gates at the queries needed (thousands of queries each: slower; 0 skips)")
    parser.add_argument("--delta", type=float, default=0.01)
    parser.add_argument("--methods", nargs="+", choices=INTERVAL_METHODS, default=["bca"],
                        help="bootstrap intervals to calibrate, on the same simulated gates (the first is checked)")
    parser.add_argument("--only", nargs="+", default=None, metavar="LIGHT_SET",
                        help="these light sets only (a quick check; the held-out macro needs all four of its sets)")
    parser.add_argument("--out", default=str(REPO / "results" / "gate" / "calibration.json"))
    args = parser.parse_args()
    unknown = sorted(set(args.only or []) - set(available()))
    if unknown:
        parser.error(f"--only {' '.join(unknown)}: not shipped light sets ({', '.join(available())})")
    t0 = time.perf_counter()
    scores = light_per_query(args.only)
    groups = {name: [name] for name in sorted(scores)}
    if set(HELD_OUT) <= set(scores):
        label = "held-out macro (" + ", ".join(n.removesuffix("Retrieval-light") for n in HELD_OUT) + ")"
        groups[label] = list(HELD_OUT)
    rows = calibrate(scores, groups, args.sims, args.delta, args.sims_needed, args.methods)
    targets = check_targets(rows, args.methods)
    aa = real_aa(args.delta)
    out = Path(args.out)
    atomic_write_json(out, finite_or_none({"delta": args.delta, "sims": args.sims, "sims_needed": args.sims_needed,
                                           "methods": args.methods, "pairs": PAIRS, "rows": rows, "targets": targets,
                                           "real_aa": aa, "seconds": time.perf_counter() - t0}))
    print("\n| light set(s) | pair | interval | queries | false-fail (A/A) | power at 2δ | 2δ drop passed | "
          "queries for 80% power | power / false-fail there |\n|---|---|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        there = (f"{r['power_at_needed']:.0%} / {r['false_fail_at_needed']:.1%}" if "power_at_needed" in r else "-")
        print(f"| {r['light_sets']} | {r['pair']} | {r['method']} | {r['queries']} | {r['false_fail']:.1%} | "
              f"{r['power_2delta']:.1%} | {r['regression_passes']:.1%} | {r['queries_needed']} | {there} |")
    for r in aa:
        print(f"real A/A rerun {r['system']} on {', '.join(r['tasks'])}: {r['verdict']} ({r['difference']:+.4f}, "
              f"CI [{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}])")
    names = {"regression_passes": "a true 2 x delta regression passes", "false_fail": "A/A false-fail"}
    for method, checks in targets.items():
        for key, c in checks.items():
            print(f"{method}: {names[key]} <= {c['target']:.1%} at every size: {'holds' if c['holds'] else 'MISSED'} "
                  f"(worst {c['worst']:.1%}, {c['at']}; {args.sims} gates per rate)")
    print(f"written: {out}")
    return 0 if all(c["holds"] for c in targets[args.methods[0]].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
