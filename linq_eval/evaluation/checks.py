"""The checks ``compare`` and ``gate`` share, run before any model loads: model references and pool independence.

Both commands refuse bad input with one line before they spend minutes loading a model; the checks live here,
below both, so that neither command imports the other.
"""

from __future__ import annotations

from linq_eval.core.errors import LinqEvalError
from linq_eval.core.light_manifest import (
    LIGHT_SUFFIX,
    load_manifest,
    manifest_path,
    require_pool_independence,
)
from linq_eval.core.settings import default_model
from linq_eval.evaluation.systems import System, canonical_name

__all__ = ["PER_QUERY_ONLY", "check_model_ref", "check_pool_independence"]

PER_QUERY_ONLY = ("{what} needs per-query scores, which linq-eval keeps for retrieval tasks; give retrieval tasks")


def check_model_ref(ref: str | None) -> None:
    from linq_eval.models.build import check_model_source
    from linq_eval.models.references import OFFLINE_MODELS

    if ref is None:
        return
    if ref.startswith("pypi:"):
        if ref.removeprefix("pypi:") not in OFFLINE_MODELS:
            raise LinqEvalError(f"--model {ref}: unknown offline model; use one of "
                                + ", ".join(f"pypi:{k}" for k in OFFLINE_MODELS))
        return
    check_model_source(ref)


def check_pool_independence(tasks: list[str], models: dict[str, str | None], *, allow_pooled: bool = False,
                            override: str | None = "--allow-pooled") -> list[str]:
    """:func:`require_pool_independence` for task names and model references (``compare`` and ``gate``).

    ``models`` maps a label to a model reference (None: Linq-Embed-Mistral); only the light sets among ``tasks``
    are checked, against each model's canonical name.
    """
    manifests = [load_manifest(manifest_path(t)) for t in tasks if t.endswith(LIGHT_SUFFIX)]
    if not manifests:
        return []
    canonical = {label: canonical_name(System(label, ref or default_model())) for label, ref in models.items()}
    return require_pool_independence(manifests, canonical, allow_pooled=allow_pooled, override=override)
