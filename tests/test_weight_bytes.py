"""The analytic 4-bit/16-bit weight bytes of benchmarks/encoder_speed.py: by hand, and against bitsandbytes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import encoder_speed as speed  # noqa: E402 -- a script, not a package; stdlib-only at import


def test_mistral_7b_by_hand() -> None:
    # per layer: q, o 4096x4096; k, v 4096x1024 (8 KV heads x 128); gate, up, down 4096x14336
    per_layer = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336
    assert per_layer == 218_103_808
    linear = 32 * per_layer  # 6,979,321,856 weights in 224 matrices
    rest = 32000 * 4096 + 65 * 4096  # token embeddings, 2 RMSNorms a layer and the final one (no lm_head)
    assert linear + rest == 7_110_660_096  # mteb's n_parameters of Linq-Embed-Mistral
    bf16 = speed.mistral_7b_weight_bytes(16)
    assert bf16 == {"linear": 2 * linear, "unquantised": 2 * rest, "total": 14_221_320_192}
    # NF4: half a byte a weight, a uint8 absmax a 64-block, an fp32 scale a 256 absmax, 1,092 B a matrix
    nf4_linear = linear // 2 + linear // 64 + linear // 64 // 256 * 4 + 224 * (4 + 64 + 1024)
    assert nf4_linear == 3_489_660_928 + 109_051_904 + 1_703_936 + 244_608 == 3_600_661_376
    nf4 = speed.mistral_7b_weight_bytes(4)
    assert nf4 == {"linear": nf4_linear, "unquantised": 262_676_480, "total": 3_863_337_856}
    assert nf4["total"] / bf16["total"] == pytest.approx(0.271658, abs=1e-6)  # whole model
    assert nf4["linear"] / bf16["linear"] == pytest.approx(0.257952, abs=1e-6)  # 4.127 bits of 16 a weight


@pytest.mark.parametrize(("out_features", "in_features"), [(320, 256), (330, 256), (30, 100)])
def test_nf4_bytes_match_bitsandbytes(out_features: int, in_features: int) -> None:
    """A real nn.Linear quantised by bitsandbytes on this CPU: its stored tensors are what the formula counts
    (330x256: 1,320 absmax, 6 nested scales; 30x100: 3,000 weights, a partial block)."""
    torch = pytest.importorskip("torch")
    bnb = pytest.importorskip("bitsandbytes")

    torch.manual_seed(0)
    layer = bnb.nn.Linear4bit(in_features, out_features, bias=False, compute_dtype=torch.bfloat16,
                              compress_statistics=True, quant_type="nf4")  # linq-4bit's settings
    layer.load_state_dict(torch.nn.Linear(in_features, out_features, bias=False).state_dict())
    layer = layer.to("cpu")  # quantises
    n = out_features * in_features
    state = layer.weight.quant_state
    assert (state.blocksize, state.state2.blocksize, state.nested) == (64, 256, True)
    assert state.absmax.dtype == torch.uint8 and state.state2.absmax.dtype == torch.float32
    saved = {k: v.numel() * v.element_size() for k, v in layer.state_dict().items()
             if not k.startswith("weight.quant_state.")}  # a JSON blob of the settings, in checkpoints only
    assert set(saved) == {"weight", "weight.absmax", "weight.quant_map", "weight.nested_absmax",
                          "weight.nested_quant_map"}
    assert speed.nf4_weight_bytes(n) == sum(saved.values()) + state.offset.numel() * state.offset.element_size()
    assert speed.nf4_weight_bytes(n) == speed.stored_bytes(layer.weight)
    assert speed.stored_bytes(torch.nn.Linear(in_features, out_features).to(torch.bfloat16).weight) == 2 * n
