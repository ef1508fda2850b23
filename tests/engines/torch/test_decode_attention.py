"""The C decode-attention kernel gives PyTorch's attention, row by row, window or not."""

from __future__ import annotations

import pytest
import torch

from slipstream.engines.torch.kernels import decode_attention as da

pytestmark = pytest.mark.skipif(not da.available(), reason="no C compiler: the engine keeps PyTorch's attention")


def reference(q, k, v, rows, lo, hi, scale):
    out = []
    for i, r in enumerate(rows.tolist()):
        a, b = int(lo[i]), int(hi[i])
        o = torch.nn.functional.scaled_dot_product_attention(
            q[i][None, :, None], k[r : r + 1, :, a:b], v[r : r + 1, :, a:b], scale=scale, enable_gqa=True)
        out.append(o[0, :, 0])
    return torch.stack(out)


@pytest.mark.parametrize("heads,kv_heads", [(9, 3), (4, 4), (8, 1)])
def test_matches_pytorch_attention(heads, kv_heads):
    g = torch.Generator().manual_seed(0)
    buffer_rows, cols, dim = 6, 96, 32
    k = torch.randn(buffer_rows, kv_heads, cols, dim, generator=g) * 2
    v = torch.randn(buffer_rows, kv_heads, cols, dim, generator=g)
    rows = torch.tensor([4, 0, 5, 2])  # any buffer rows, in any order
    hi = torch.tensor([1, 96, 40, 17])  # one column up to the whole buffer
    lo = torch.tensor([0, 30, 0, 9])  # a sliding window starts later
    q = torch.randn(len(rows), heads, dim, generator=g) * 3
    out = da.decode_attention(q, k, v, rows, lo, hi, 0.2)
    assert out.shape == (4, heads, dim)
    assert torch.allclose(out, reference(q, k, v, rows, lo, hi, 0.2), atol=1e-5)
    # one column: the output is that column's value for every head of the group
    assert torch.allclose(out[0], v[4, :, 0].repeat_interleave(heads // kv_heads, 0), atol=1e-6)


def test_bad_input_is_refused_not_read_out_of_bounds():
    k = torch.zeros(2, 1, 8, 4)
    with pytest.raises(AssertionError):
        da.decode_attention(torch.zeros(1, 1, 4), k, k, torch.tensor([0]), torch.tensor([0]), torch.tensor([9]), 1.0)
    with pytest.raises(AssertionError):
        da.decode_attention(torch.zeros(1, 1, 4), k, k, torch.tensor([0]), torch.tensor([3]), torch.tensor([3]), 1.0)


def test_switched_off_by_the_engine_option(monkeypatch):
    """``decode_attention="torch"`` (the engine option; ``SLIPSTREAM_DECODE_ATTENTION=torch`` at the CLI)
    keeps PyTorch's attention in a fused step; both give the same numbers."""
    from slipstream.engines.torch.attention import StepPlan, fused_attention

    g = torch.Generator().manual_seed(0)
    lengths, heads, kv_heads, cols, dim = [3, 40, 17], 4, 2, 64, 16
    k = torch.randn(len(lengths), kv_heads, cols, dim, generator=g)
    v = torch.randn(len(lengths), kv_heads, cols, dim, generator=g)
    q = torch.randn(1, heads, len(lengths), dim, generator=g)
    outputs = {}
    for kernel in (True, False):
        plan = StepPlan.build(lengths, [], torch.tensor(lengths), c_kernel=kernel)
        calls = []
        real = da.decode_attention
        monkeypatch.setattr(da, "decode_attention", lambda *a: calls.append(1) or real(*a))
        outputs[kernel], _ = fused_attention(q, k, v, plan, None, None)
        assert bool(calls) == kernel
    assert torch.allclose(outputs[True], outputs[False], atol=1e-5)
