"""Does a light set make the same decisions as the full task? (``linq-eval light validate``)

Per task, a panel of systems of clearly different quality is scored per query (nDCG@10) three ways: on the
full corpus with all judged queries (the full task), on the full corpus with the light set's queries, and on
the light corpus with those queries. As docs/stats.md defines, the light set is compared

(a) with the full corpus on the same queries: the error of the corpus reduction alone, and
(b) with the full task: that error plus the error of sampling queries,

by reversals of Holm-significant pairs, Kendall tau and Spearman of the systems' means, score inflation
(pooled and non-pooled systems apart), the smallest difference the sampled queries can detect, and the cost
(documents, tokens, wall time). The sweep repeats this over depth, query count and retriever set.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from linq_eval.core.light_manifest import LightManifest
from linq_eval.core.per_query import per_query_measure, retrieval_per_query
from linq_eval.core.stats import holm, kendall_tau, mde, pairwise_permutation_pvalues, spearman
from linq_eval.evaluation.systems import Ranker, Run, System, TaskData, parse_retrievers
from linq_eval.light.build import BuildSpec, manifest_from_runs, relevant

logger = logging.getLogger(__name__)

MINILM = "pypi:all-MiniLM-L6-v2"
# At least 8 systems of clearly different quality, most of them never used to pool (docs/stats.md), cheap
# enough to encode every document of every task on a 2-core CPU (about 25k documents in all). Near-copies of
# the pooled systems (a BM25 variant, MiniLM truncated) are in on purpose: pooling favours them.
PANEL: tuple[System, ...] = (
    System("bm25", "bm25"),
    System("bm25-k0.9-b0.4", "bm25", params=(("b", 0.4), ("k1", 0.9))),
    System("tfidf", "tfidf"),
    System("minilm", MINILM),
    System("minilm-64tok", MINILM, max_length=64),
    System("minilm-32tok", MINILM, max_length=32),
    System("minilm-16tok", MINILM, max_length=16),
    System("random-minilm", MINILM, max_length=64, random_init=True),
)
# Stronger or slower systems for machines with the time (a GPU, or hours of CPU): `--panel extended`.
EXTENDED: tuple[System, ...] = (
    System("minilm-4bit", MINILM, bits=4),
    System("mpnet", "pypi:all-mpnet-base-v2"),
    System("smollm2-linq", "pypi:SmolLM2-135M", max_length=128),  # the Linq path: instructions, last token
)
PANELS = {"default": PANEL, "extended": PANEL + EXTENDED}
UNION_TASK = "CollectionsUnionRetrieval"
POOL_CANDIDATES = ("bm25", MINILM)  # retrievers the sweep pools with
POOL_TOP_K = 100  # the deepest pool the sweep considers
ALPHA = 0.05
# ranks handed to pytrec_eval for nDCG@10: more than 10, so documents tied at rank 10 are ordered by
# pytrec_eval's own tie-break, as in mteb's evaluation (top 1000), not by the order argpartition left them in
SCORE_DEPTH = 100


def identity(system: System) -> tuple:
    """What makes two systems the same scorer (the label does not)."""
    return system.ref, system.bits, system.max_length, system.random_init, system.params


def pooled_names(panel: tuple[System, ...], manifest: LightManifest) -> set[str]:
    pooling = {identity(s) for s in parse_retrievers(",".join(r.name for r in manifest.retrievers))}
    return {s.name for s in panel if identity(s) in pooling}


@dataclass
class TaskPanel:
    """One task's panel, scored once on the full task; light sets are scored from it."""

    data: TaskData
    panel: tuple[System, ...]
    rankers: dict[str, Ranker]
    judged: list[str]
    full: dict[str, dict[str, float]]  # system -> query -> nDCG@10 on the full corpus
    pools: dict[str, Run]  # pooling retriever ref -> full-corpus top-POOL_TOP_K of every judged query
    tokens: dict[str, int]  # document -> tokens (all-MiniLM-L6-v2's tokenizer, untruncated)


def prepare(task: Any, panel: tuple[System, ...] = PANEL, pool_refs: tuple[str, ...] = POOL_CANDIDATES,  # noqa: ANN401
            split: str | None = None) -> TaskPanel:
    from linq_eval.evaluation.systems import task_data

    data = task_data(task, split or task.metadata.eval_splits[0])  # the task's evaluation split
    metric, top_k = _metric(task)
    judged = [q for q in data.query_ids if relevant(data.qrels, [q])]
    rankers = {s.name: Ranker(s, data) for s in panel}
    full = {}
    for s in panel:
        t0 = time.perf_counter()
        full[s.name] = retrieval_per_query(rankers[s.name].run(query_ids=judged, top_k=top_k), _qrels(data, judged),
                                            metric)
        logger.info("%s on %s (full): %.4f in %.1fs", s.name, task.metadata.name,
                    np.mean(list(full[s.name].values())), time.perf_counter() - t0)
    by_ref = {identity(System(r, r)): r for r in pool_refs}
    pools = {}
    for ref in pool_refs:
        owner = next((rk for s, rk in zip(panel, rankers.values(), strict=True) if identity(s) == identity(System(ref, ref))),
                     None) or Ranker(System(ref, ref), data)
        pools[by_ref[identity(System(ref, ref))]] = owner.run(query_ids=judged, top_k=POOL_TOP_K)
    return TaskPanel(data, panel, rankers, judged, full, pools, _token_counts(data))


def _qrels(data: TaskData, query_ids: list[str], doc_ids: set[str] | None = None) -> dict[str, dict[str, int]]:
    return {q: {d: g for d, g in data.qrels[q].items() if doc_ids is None or d in doc_ids} for q in query_ids}


def _token_counts(data: TaskData) -> dict[str, int]:
    from transformers import AutoTokenizer

    from linq_eval.models.references import resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve(MINILM))
    texts = data.doc_text()
    ids = list(texts)
    lengths = tokenizer([texts[i] for i in ids], add_special_tokens=True, verbose=False)["input_ids"]
    return {i: len(t) for i, t in zip(ids, lengths, strict=True)}


def manifest_for(tp: TaskPanel, queries: int, depth: int, retrievers: str, seed: int = 0) -> LightManifest:
    """A light set built from the panel's stored pooling runs: what ``light build`` writes for these inputs."""
    spec = BuildSpec(task=tp.data.task.metadata.name, queries=queries, depth=depth, retrievers=retrievers, seed=seed)
    systems = parse_retrievers(retrievers)
    if depth > POOL_TOP_K:
        raise ValueError(f"depth {depth} exceeds the stored pools' {POOL_TOP_K}")
    return manifest_from_runs(spec, tp.data, systems, {s.ref: tp.pools[s.ref] for s in systems})


def light_scores(tp: TaskPanel, manifest: LightManifest) -> dict[str, dict[str, float]]:
    docs = list(manifest.corpus_ids)
    qrels = _qrels(tp.data, manifest.query_ids, set(docs))
    metric, top_k = _metric(tp.data.task)
    return {name: retrieval_per_query(r.run(doc_ids=docs, query_ids=manifest.query_ids, top_k=top_k), qrels, metric)
            for name, r in tp.rankers.items()}


def _metric(task: Any) -> tuple[str, int]:  # noqa: ANN401 -- an mteb task
    """The task's main score and the ranking depth handed to pytrec_eval (at least ``SCORE_DEPTH``)."""
    metric = task.metadata.main_score
    return metric, max(SCORE_DEPTH, per_query_measure(metric, task.metadata.name)[1])


def _matrix(scores: dict[str, dict[str, float]], names: list[str], queries: list[str]) -> np.ndarray:
    return np.array([[scores[n][q] for q in queries] for n in names])


def _significant(matrix: np.ndarray, alpha: float, seed: int) -> dict[tuple[int, int], int]:
    """Pairs (i < j) whose difference is significant after Holm, with the sign of mean_i - mean_j."""
    p = pairwise_permutation_pvalues(matrix, seed=seed)
    pairs = list(combinations(range(matrix.shape[0]), 2))
    adjusted = holm([p[i, j] for i, j in pairs])
    means = matrix.mean(axis=1)
    return {(i, j): int(np.sign(means[i] - means[j])) for (i, j), a in zip(pairs, adjusted, strict=True) if a < alpha}


def fidelity(tp: TaskPanel, manifest: LightManifest, *, alpha: float = ALPHA, seed: int = 0) -> dict[str, Any]:
    """Every number docs/stats.md asks of a light set, for one manifest."""
    names = [s.name for s in tp.panel]
    queries = list(manifest.query_ids)
    light = _matrix(light_scores(tp, manifest), names, queries)
    same = _matrix(tp.full, names, queries)
    full = _matrix(tp.full, names, tp.judged)
    m_light, m_same, m_full = light.mean(1), same.mean(1), full.mean(1)
    pooled = pooled_names(tp.panel, manifest)

    def sign(i: int, j: int, means: np.ndarray) -> int:
        return int(np.sign(means[i] - means[j]))

    sig_same = _significant(same, alpha, seed)
    sig_full = _significant(full, alpha, seed)
    sig_light = _significant(light, alpha, seed)
    pair_sd = [float(np.std(light[i] - light[j], ddof=1)) for i, j in combinations(range(len(names)), 2)]
    inflation = m_light - m_same
    is_pooled = np.array([n in pooled for n in names])
    docs_light, docs_full = len(manifest.corpus_ids), len(tp.data.doc_ids)
    tok_light = sum(tp.tokens[d] for d in manifest.corpus_ids)
    tok_full = sum(tp.tokens.values())
    return {
        "task": tp.data.task.metadata.name,
        "queries": len(queries), "full_queries": len(tp.judged),
        "depth": manifest.parameters.depth, "seed": manifest.parameters.seed,
        "retrievers": [r.name for r in manifest.retrievers],
        "docs": docs_light, "full_docs": docs_full, "doc_fraction": docs_light / docs_full,
        "tokens": tok_light, "full_tokens": tok_full, "token_fraction": tok_light / tok_full,
        "systems": [{"name": n, "pooled": bool(p), "full_task": float(f), "full_corpus_same_queries": float(s),
                     "light": float(li), "inflation": float(li - s)}
                    for n, p, f, s, li in zip(names, is_pooled, m_full, m_same, m_light, strict=True)],
        "vs_full_corpus": {  # (a): corpus reduction only
            "significant_pairs": len(sig_same),
            "reversals": sum(sign(i, j, m_light) != s for (i, j), s in sig_same.items()),
            "kendall_tau": kendall_tau(m_light, m_same), "spearman": spearman(m_light, m_same)},
        "vs_full_task": {  # (b): corpus reduction + query sampling
            "significant_pairs": len(sig_full),
            "reversals": sum(sign(i, j, m_light) != s for (i, j), s in sig_full.items()),
            "light_significant_pairs": len(sig_light),
            "wrong_direction": sum(sign(i, j, m_full) != s for (i, j), s in sig_light.items()),
            "kendall_tau": kendall_tau(m_light, m_full), "spearman": spearman(m_light, m_full)},
        "sampling_only": {  # full corpus, sampled queries vs the full task: the error of query sampling alone
            "reversals": sum(sign(i, j, m_same) != s for (i, j), s in sig_full.items()),
            "kendall_tau": kendall_tau(m_same, m_full), "spearman": spearman(m_same, m_full)},
        "inflation": {
            "pooled_max_abs": float(np.abs(inflation[is_pooled]).max()) if is_pooled.any() else 0.0,
            "non_pooled_mean": float(inflation[~is_pooled].mean()) if (~is_pooled).any() else 0.0,
            "non_pooled_max": float(inflation[~is_pooled].max()) if (~is_pooled).any() else 0.0},
        "mde_median_pair": mde(float(np.median(pair_sd)), len(queries)) if len(queries) > 1 else float("nan"),
    }


def meets_targets(row: dict[str, Any], tau: float = 0.9) -> dict[str, bool]:
    return {"a_no_reversal": row["vs_full_corpus"]["reversals"] == 0,
            "b_no_wrong_direction": row["vs_full_task"]["wrong_direction"] == 0,
            "tau_a": row["vs_full_corpus"]["kendall_tau"] >= tau}


# -- the sweep ----------------------------------------------------------------------------------------------
RETRIEVER_SETS = ("bm25", f"bm25,{MINILM}")
DEPTHS = (10, 30, 100)
QUERY_COUNTS = (50, 100, 200, 10**6)  # 10**6: every query
SEEDS = (0, 1, 2)


def sweep(tp: TaskPanel, *, depths: tuple[int, ...] = DEPTHS, query_counts: tuple[int, ...] = QUERY_COUNTS,
          retriever_sets: tuple[str, ...] = RETRIEVER_SETS, seeds: tuple[int, ...] = SEEDS) -> list[dict[str, Any]]:
    """Fidelity over the grid; a query count at or above the task's size is evaluated once (seed 0)."""
    rows = []
    counts = sorted({min(q, len(tp.judged)) for q in query_counts})
    for retrievers in retriever_sets:
        for depth in depths:
            for q in counts:
                for seed in (seeds if q < len(tp.judged) else seeds[:1]):
                    row = fidelity(tp, manifest_for(tp, q, depth, retrievers, seed))
                    # the grid's query counts this row stands for (on a small task several collapse into one)
                    row["query_counts"] = [c for c in query_counts if min(c, len(tp.judged)) == q]
                    rows.append(row)
    return rows


def summarise_sweep(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per grid configuration (retrievers, depth, query count) over every task and seed: the worst
    case of each fidelity number and the cost. Pure; the shipped defaults are chosen from it (choose_defaults)."""
    configs: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        for count in r["query_counts"]:
            configs.setdefault((",".join(r["retrievers"]), r["depth"], count), []).append(r)
    out = []
    for (retrievers, depth, count), group in sorted(configs.items()):
        union = [r for r in group if r["task"] == UNION_TASK]
        out.append({
            "retrievers": retrievers, "depth": depth, "queries": count, "tasks": len({r["task"] for r in group}),
            "runs": len(group),
            "a_reversals_max": max(r["vs_full_corpus"]["reversals"] for r in group),
            "a_tau_min": min(r["vs_full_corpus"]["kendall_tau"] for r in group),
            "b_wrong_direction_max": max(r["vs_full_task"]["wrong_direction"] for r in group),
            "b_reversals_max": max(r["vs_full_task"]["reversals"] for r in group),
            "b_tau_min": min(r["vs_full_task"]["kendall_tau"] for r in group),
            "sampling_reversals_max": max(r["sampling_only"]["reversals"] for r in group),
            "sampling_tau_min": min(r["sampling_only"]["kendall_tau"] for r in group),
            "doc_fraction_mean": float(np.mean([r["doc_fraction"] for r in group])),
            "union_doc_reduction": (float(np.mean([r["full_docs"] / r["docs"] for r in union])) if union
                                    else float("nan")),
        })
    return out


def choose_defaults(summary: list[dict[str, Any]], min_queries: int = 200, tau: float = 0.9) -> dict[str, Any] | None:
    """The cheapest configuration (fewest documents kept, on average over tasks) that meets targets (a) and (b)
    on every task and seed, samples at least ``min_queries`` queries (fewer are cheaper still, but only detect
    large differences, and a checkpoint gate must see a few points) and, where any does, the secondary target
    Kendall tau (a) >= ``tau``."""
    ok = [c for c in summary if c["a_reversals_max"] == 0 and c["b_wrong_direction_max"] == 0
          and c["queries"] >= min_queries]
    ok = [c for c in ok if c["a_tau_min"] >= tau] or ok
    return min(ok, key=lambda c: (c["doc_fraction_mean"], -c["queries"]), default=None)


def encode_seconds(ref: str, texts: list[str], batch_size: int = 64) -> float:
    """Wall time to encode ``texts`` afresh (no cache) with a dense model: the cost a light set saves."""
    from linq_eval.evaluation.systems import load_system_encoder

    encoder = load_system_encoder(System(ref, ref))
    encoder.show_progress = False
    t0 = time.perf_counter()
    encoder.encode_texts(texts, batch_size=batch_size)
    return time.perf_counter() - t0
