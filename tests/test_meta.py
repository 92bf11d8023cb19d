"""Our ModelMeta entries, held to mteb's own per-entry model tests (tests/test_models/test_model_meta.py)."""

from __future__ import annotations

import copy
import inspect
import json

import mteb
import pytest
from mteb.models.model_implementations import MODEL_REGISTRY
from mteb.models.model_meta import ModelMeta

from linq_eval.models.entries import ENTRIES, build_metas

OURS = sorted(ENTRIES)
OFFICIAL = "Linq-AI-Research/Linq-Embed-Mistral"


@pytest.fixture(params=OURS)
def meta(request: pytest.FixtureRequest) -> ModelMeta:
    return mteb.get_model_meta(request.param)


def test_name_resolves_to_same_name_and_revision(meta: ModelMeta) -> None:
    official = mteb.get_model_meta(meta.name)
    assert "/" in meta.name and meta.revision
    assert (official.name, official.revision) == (meta.name, meta.revision)


def test_descriptive_fields_equal_mtebs_record(meta: ModelMeta) -> None:
    assert meta.license == "cc-by-nc-4.0"
    assert meta.n_parameters == 7110660096
    assert meta.n_embedding_parameters == 131072000
    assert meta.embed_dim == 4096
    assert meta.max_tokens == 32768
    assert meta.release_date == "2024-05-29"
    assert meta.memory_usage_mb == 13563
    assert meta.adapted_from == "intfloat/e5-mistral-7b-instruct" != meta.name
    official = MODEL_REGISTRY[OFFICIAL]
    assert meta.training_datasets == official.training_datasets
    assert meta.languages == ["eng-Latn"] and meta.similarity_fn_name == official.similarity_fn_name
    assert meta.framework == official.framework and meta.model_type == ["dense"]
    assert meta.use_instructions is True and meta.extra_requirements_groups is None


def test_training_datasets_can_be_derived(meta: ModelMeta) -> None:
    assert meta.get_training_datasets()


def test_experiment_kwargs_survive_deepcopy_and_json(meta: ModelMeta) -> None:
    """The settings live in ``experiment_kwargs`` (``loader_kwargs`` is empty): they must copy and round-trip."""
    assert meta.loader_kwargs == {}
    kwargs = meta.experiment_kwargs
    assert kwargs["bits"] in (4, 8, 16) and kwargs["implementation"] == "linq-eval"
    assert copy.deepcopy(kwargs) == kwargs
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert json.loads(json.dumps(meta.to_dict(), default=str))["name"] == meta.name


def test_loader_name_is_unique_and_accepts_experiment_kwargs(meta: ModelMeta) -> None:
    others = {m.loader.__name__ for key, m in MODEL_REGISTRY.items() if key not in ENTRIES and m.loader is not None}
    assert meta.loader.__name__ not in others
    params = inspect.signature(meta.loader).parameters
    assert set(meta.experiment_kwargs) <= set(params)
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()), "typos must not pass silently"


def test_each_precision_has_its_own_experiment() -> None:
    names = {mteb.get_model_meta(key).experiment_name for key in OURS}
    assert len(names) == len(OURS) and None not in names
    assert all(f"bits_{bits}" in mteb.get_model_meta(key).experiment_name for key, bits in ENTRIES.items())


def test_stand_in_model_gets_its_own_experiment(tmp_path) -> None:
    metas = build_metas(model_override=str(tmp_path))
    default = build_metas(model_override="")
    assert metas["linq"].experiment_name != default["linq"].experiment_name
    assert metas["linq"].name == OFFICIAL
