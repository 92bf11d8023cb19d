"""The ``linq`` model entries for mteb, one per precision, declared as data.

Each entry keeps mteb's record of Linq-Embed-Mistral (name, revision, license, sizes, training data) and
swaps in our loader. ``experiment_kwargs`` put our results in their own experiment folder,
``<name>/<revision>/experiments/<experiment>/``, so that 4-bit, 8-bit and 16-bit results never overwrite
each other, and none of them is mistaken for mteb's published scores from the stock loader (which lacks
the EOS fix and the 512-token limit).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from linq_eval.core.settings import DEFAULT_MODEL
from linq_eval.core.settings import model_override as _model_override
from linq_eval.models.build import DEFAULT_MAX_LENGTH
from linq_eval.models.mteb_loader import load_linq_encoder

if TYPE_CHECKING:
    from mteb.models.model_meta import ModelMeta

# registry key -> bits
ENTRIES: dict[str, int] = {"linq": 16, "linq-8bit": 8, "linq-4bit": 4}
IMPLEMENTATION = "linq-eval"


def experiment_kwargs(bits: int, model_override: str | None = None) -> dict[str, object]:
    """The experiment of an entry; a stand-in model (``$LINQ_MODEL``) gets an experiment of its own."""
    kwargs: dict[str, object] = {"implementation": IMPLEMENTATION, "bits": bits, "max_length": DEFAULT_MAX_LENGTH}
    if model_override:
        kwargs["model"] = model_override
    return kwargs


def build_metas(model_override: str | None = None) -> dict[str, ModelMeta]:
    """Registry key -> ``ModelMeta`` for every precision, built from mteb's own Linq record."""
    from mteb.models.model_implementations import MODEL_REGISTRY

    if model_override is None:
        model_override = _model_override()
    upstream = MODEL_REGISTRY[DEFAULT_MODEL]
    return {
        key: upstream.model_copy(
            deep=True,
            update={
                "loader": load_linq_encoder,
                "loader_kwargs": {},
                "experiment_kwargs": experiment_kwargs(bits, model_override),
            },
        )
        for key, bits in ENTRIES.items()
    }
