"""From the jobs' per-query scores to ``compare``'s answers (pure but for reading the stored files).

Per system, task and lower precision against the reference (the highest): the main scores, the paired mean
difference with its 95% bootstrap interval and randomisation p-value, and the TOST verdict on the 90% interval
(``stats.tost``). The A/A rerun gives each task's noise floor; a margin inside it cannot be told from
nondeterminism. Across systems: Kendall tau of their order at each precision vs the reference. Beside the
scores: cosine of the same texts' embeddings and Pearson of query-document scores, and the cost ratios.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from linq_eval.core.per_query import read_per_query
from linq_eval.core.stats import bootstrap_ci, kendall_tau, tost

RULE = ("equivalent: the 90% CI of the paired mean difference (lower precision - reference) lies inside "
        "[-margin, +margin]; different: it lies outside, or the difference is significant (p < 0.05) and "
        "larger than the margin; inconclusive otherwise (the queries that would decide are given). A margin "
        "below the A/A noise floor (95% CI of the reference against itself, batched otherwise) is flagged.")


def paired(a: dict[str, float], b: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    queries = sorted(set(a) & set(b))
    if len(queries) != len(a) or len(queries) != len(b):
        raise ValueError("the two runs scored different queries: not a paired comparison")
    return np.array([a[q] for q in queries]), np.array([b[q] for q in queries])


def task_row(low: dict[str, float], ref: dict[str, float], margin: float, noise: float | None) -> dict[str, Any]:
    a, b = paired(low, ref)
    eq = tost(a, b, margin=margin)
    ci95 = bootstrap_ci(a, b)
    return {"score": float(a.mean()), "reference_score": float(b.mean()), "queries": int(a.size),
            "difference": eq.mean_difference, "ci95": list(ci95), "ci90": [eq.low, eq.high], "p_value": eq.p_value,
            "verdict": eq.verdict, "queries_to_decide": eq.queries_to_decide,
            "noise_floor": noise, "margin_below_noise": noise is not None and margin <= noise}


def noise_floor(aa: dict[str, float], ref: dict[str, float]) -> float:
    """The largest difference the reference shows against itself (95% CI bound of the A/A difference)."""
    low, high = bootstrap_ci(*paired(aa, ref))
    return float(max(abs(low), abs(high)))


def similarity(low: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, float]:
    """Cosine between the two precisions' embeddings of the same texts, and Pearson of q.d scores."""
    cos = np.concatenate([np.sum(low[s] * ref[s], axis=1) /
                          (np.linalg.norm(low[s], axis=1) * np.linalg.norm(ref[s], axis=1)) for s in ref])
    s_low = (low["queries"] @ low["documents"].T).ravel()
    s_ref = (ref["queries"] @ ref["documents"].T).ravel()
    return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
            "score_pearson": float(np.corrcoef(s_low, s_ref)[0, 1]), "pairs": int(s_ref.size)}


def _embeddings(result: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """The job's sample embeddings; None when missing or unreadable (the similarity columns then stay empty)."""
    out = Path(result["job"]["out"])
    paths = {s: out.with_suffix(f".{s}.npy") for s in ("queries", "documents")}
    try:
        return {s: np.load(p, allow_pickle=False) for s, p in paths.items()}
    except (OSError, ValueError, EOFError):
        return None


def cost_ratios(cost: dict[str, Any], ref: dict[str, Any]) -> dict[str, float | None]:
    from linq_eval.compare.job import throughput

    cost, ref = ({**c, "tokens_per_second": throughput(c["encode"])} for c in (cost, ref))

    def ratio(key: str) -> float | None:
        return cost[key] / ref[key] if cost.get(key) and ref.get(key) else None

    return {k: ratio(k) for k in ("load_seconds", "eval_seconds", "tokens_per_second", "weight_bytes",
                                  "peak_rss_bytes", "peak_gpu_bytes")}


def analyse(spec: Any, results: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: ANN401 -- a CompareSpec
    ref_bits = spec.bits[0]
    main = {(r["system"], r["bits"]): r for r in results if not r["aa"]}
    aa = {r["system"]: r for r in results if r["aa"]}
    rows, precisions = [], []
    for system in [s.label for s in spec.systems]:
        ref = main[(system, ref_bits)]
        for bits in spec.bits:
            r = main[(system, bits)]
            entry = {"system": system, "bits": bits, "status": r["status"], "reason": r.get("reason"),
                     "cost": r.get("cost")}
            if r["status"] == "ok" and ref["status"] == "ok" and bits != ref_bits:
                # times of a resumed run leave out its cached tasks: no ratio of unlike things
                resumed = r["cost"].get("resumed_tasks") or ref["cost"].get("resumed_tasks")
                entry["cost_ratio"] = None if resumed else cost_ratios(r["cost"], ref["cost"])
                low_emb, ref_emb = _embeddings(r), _embeddings(ref)
                entry["similarity"] = similarity(low_emb, ref_emb) if low_emb and ref_emb else None
            precisions.append(entry)
            if bits == ref_bits or r["status"] != "ok" or ref["status"] != "ok":
                continue
            for task in spec.tasks:
                ref_scores = read_per_query(ref["per_query"][task])
                a = aa.get(system)
                noise = (noise_floor(read_per_query(a["per_query"][task]), ref_scores)
                         if a and a["status"] == "ok" else None)
                rows.append({"system": system, "task": task, "bits": bits,
                             **task_row(read_per_query(r["per_query"][task]), ref_scores, spec.margin, noise)})
    per_query = {key: {t: read_per_query(r["per_query"][t]) for t in spec.tasks} for key, r in main.items()
                 if r["status"] == "ok"}
    return {"margin": spec.margin, "reference_bits": ref_bits, "bits": spec.bits, "tasks": spec.tasks,
            "systems": [s.label for s in spec.systems], "rule": RULE, "pooled_warnings": spec.pooled_warnings,
            "rows": rows, "precisions": precisions, "rankings": rankings(rows, spec),
            "gate_verdicts": gate_verdicts(per_query, [s.label for s in spec.systems], spec.bits, spec.margin)}


def gate_verdicts(per_query: dict[tuple[str, int], dict[str, dict[str, float]]], systems: list[str], bits: list[int],
                  delta: float) -> list[dict[str, Any]]:
    """``linq-eval gate``'s verdict on each system against the first (the baseline), at every precision.

    The conclusion a cheaper precision must preserve (docs/stats.md): a checkpoint that passes, fails or cannot
    be decided at the reference precision should get the same verdict at the cheaper one.
    """
    from linq_eval.core.gate_rule import GateRule, decide

    out = []
    for system in systems[1:]:
        verdicts: dict[int, str | None] = {}
        for b in bits:
            cand, base = per_query.get((system, b)), per_query.get((systems[0], b))
            if cand is None or base is None:
                verdicts[b] = None  # a precision that failed or could not run
                continue
            pairs = {t: paired(cand[t], base[t]) for t in base}
            verdicts[b] = decide(pairs, GateRule(delta=delta)).verdict
        known = [v for v in verdicts.values() if v is not None]
        out.append({"system": system, "baseline": systems[0], "delta": delta, "verdicts": verdicts,
                    "preserved": len(set(known)) == 1 if len(known) == len(bits) else None})
    return out


def rankings(rows: list[dict[str, Any]], spec: Any) -> list[dict[str, Any]]:  # noqa: ANN401
    """Kendall tau between the systems' order at each precision and at the reference, per task and on average."""
    systems = [s.label for s in spec.systems]
    if len(systems) < 2:
        return []
    out = []
    for bits in spec.bits[1:]:
        per_task = {}
        for task in spec.tasks:
            got = {r["system"]: r for r in rows if r["bits"] == bits and r["task"] == task}
            if len(got) == len(systems):
                per_task[task] = kendall_tau([got[s]["score"] for s in systems],
                                             [got[s]["reference_score"] for s in systems])
        got = [r for r in rows if r["bits"] == bits]
        mean = {s: [np.mean([r[k] for r in got if r["system"] == s]) for k in ("score", "reference_score")]
                for s in systems if any(r["system"] == s for r in got)}
        average = (kendall_tau([mean[s][0] for s in systems], [mean[s][1] for s in systems])
                   if len(mean) == len(systems) else None)
        out.append({"bits": bits, "per_task": per_task, "average": average})
    return out
