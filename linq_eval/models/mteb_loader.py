"""mteb's loader for the ``linq`` entries: kept apart from ``encoder.py`` so that registering it imports nothing.

``ModelMeta.loader`` must be importable while mteb itself is still being imported (our import hook registers
right after), so this module imports torch, mteb and the encoder only when the loader is called.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from linq_eval.models.encoder import LinqEncoder

def load_linq_encoder(
    model_name: str,
    revision: str | None = None,
    *,
    device: str | None = None,
    bits: int = 16,
    max_length: int = 512,
    dtype: str | None = None,
    model: str | None = None,
    adapter: str | None = None,
    instructions: str | None = None,
    batch_size: int = 32,
    devices: Sequence[str] | str | None = None,
    embed_dim: int | None = None,
    implementation: str = "linq-eval",
    weights_sha256: str | None = None,
    adapter_sha256: str | None = None,
    merge_adapter: bool = False,
) -> LinqEncoder:
    """mteb loader for the ``linq`` entries (``ModelMeta.loader``): builds a :class:`LinqEncoder`.

    Every key of the metas' ``experiment_kwargs`` is a parameter here. ``model`` overrides the weights
    (``$LINQ_MODEL``: a local directory, e.g. a small stand-in model), while results stay under the
    official name in an experiment folder of their own.
    """
    from linq_eval.core.instructions import load_instructions
    from linq_eval.models.build import build_model
    from linq_eval.models.encoder import LinqEncoder

    del implementation, weights_sha256, adapter_sha256  # recorded in the experiment name only
    source = model or model_name
    st_model = build_model(source, bits=bits, adapter=adapter, max_length=max_length, device=device, dtype=dtype,
                           revision=revision if source == model_name else None, merge_adapter=merge_adapter)
    if embed_dim is not None:
        st_model.truncate_dim = embed_dim
    table = load_instructions(instructions)
    return LinqEncoder(st_model, table, batch_size=batch_size, devices=devices)
