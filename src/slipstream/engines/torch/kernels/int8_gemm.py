"""W8A8 int8 checkpoints multiplied in int8 on the CPU, instead of decompressed to float32.

A compressed-tensors W8A8 checkpoint (the ``w8a8`` technique's output: int8 weights with one scale per
output channel, activations quantized to int8 per token at run time) is, as transformers loads it,
decompressed to float32 weights on the first forward pass; every layer then rounds its input to int8
and back in float ("fake quantization") and multiplies in float32. That runs the int8 arithmetic at
more than float32's cost: such a checkpoint decodes slower than its float32 original
(docs/engines.md#w8a8-in-int8).

Here the same arithmetic runs as int8 products: each layer keeps its int8 weight, quantizes its input
per token exactly as compressed-tensors does (``scale = max|x| / 127.5``, ``q = clamp(round(x /
scale), -128, 127)``), multiplies ``q`` by the int8 weight with PyTorch's ``torch._int_mm`` (oneDNN's
int8 GEMM, AVX-512 VNNI or AVX2 as the CPU has) into int32, and scales the sums by the token's and the
channel's scales. The int32 sums are exact, so the result differs from the float32 path only by float
rounding (greedy tokens equal in ``tests/engines/test_int8_gemm.py``).

The int8 products take less time than the same products in float32, the more so as rows are added:
the int8 weights are a quarter of the bytes to read, and a few rows cost little more than one (figures:
docs/engines.md#matrix-products, from ``benchmarks/kernels/gemm_rows.py --int8``).

Only layers of exactly that scheme change; a checkpoint with any other quantized layer (4-bit groups,
static activation scales) is left to compressed-tensors untouched.
"""

from __future__ import annotations

import types
from typing import Any

INT8_SCHEME = {"num_bits": 8, "type": "int", "symmetric": True}
EPS = 1.1920928955078125e-07  # torch.finfo(torch.float32).eps


def _eligible(module: Any) -> bool | None:
    """True for a W8A8 int8 layer this module can run, False for another quantized layer, None for a
    layer compressed-tensors does not quantize."""
    scheme = getattr(module, "quantization_scheme", None)
    if scheme is None:
        return None
    import torch

    w, a = scheme.weights, scheme.input_activations

    def is_int8(args: Any) -> bool:
        return args is not None and all(str(getattr(getattr(args, k), "value", getattr(args, k))) == str(v)
                                        for k, v in INT8_SCHEME.items())

    weight = getattr(module, "weight", None)
    return bool(
        isinstance(module, torch.nn.Linear) and is_int8(w) and str(getattr(w.strategy, "value", w.strategy)) == "channel"
        and is_int8(a) and a.dynamic is True and str(getattr(a.strategy, "value", a.strategy)) == "token"
        and scheme.output_activations is None and weight is not None and weight.dtype == torch.int8
        and getattr(module, "weight_scale", None) is not None
        and str(getattr(getattr(module, "quantization_status", None), "value", "")) == "compressed"
    )


# Sibling layers that read the same input tensor: the first quantizes it, the others reuse that.
SHARED_INPUT = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class _SharedInput:
    """One group of siblings' last quantized input (the first sibling always requantizes)."""

    def __init__(self) -> None:
        self.x: Any = None
        self.q: Any = None
        self.scale: Any = None


def int8_forward(self: Any, x: Any) -> Any:
    """One W8A8 layer: per-token int8 input times the int8 weight with 32-bit sums, then scaled."""
    import torch

    shared = self._int8_shared
    if shared is not None and not self._int8_leads and shared.x is x:
        q, scale = shared.q, shared.scale
    else:
        flat = x.reshape(-1, x.shape[-1]).float()
        # compressed-tensors replaces a zero scale by eps; clamping at eps differs only for tokens whose
        # largest value is below 1.5e-5, where either way the token contributes nothing measurable
        scale = flat.abs().amax(-1, keepdim=True).div_(127.5).clamp_min_(EPS)
        # uint8 with offset 128 (the zero point below): oneDNN's u8 x s8 kernel, exact with VNNI
        q = torch.div(flat, scale).round_().clamp_(-128, 127).add_(128).to(torch.uint8)
        if shared is not None:
            shared.x, shared.q, shared.scale = x, q, scale
    out = torch.ops.onednn.qlinear_pointwise.default(q, 1.0, 128, self._int8_packed, self._int8_channel_scale,
                                             self._int8_zero_points, None, 1.0, 0, torch.float32, "none", [], "")
    out.mul_(scale)
    if self.bias is not None:
        out += self.bias
    return out.to(x.dtype).reshape(*x.shape[:-1], out.shape[-1])


def available() -> str | None:
    """None if this machine can run the int8 products, else why not."""
    import torch

    from slipstream.machine import has_int8_dot_product

    if not has_int8_dot_product():
        return ("this CPU has no int8 dot product (VNNI or AMX): oneDNN's int8 kernels would add pairs of "
                "products in 16 bits, which saturate")
    if not hasattr(torch.ops.onednn, "qlinear_pointwise"):
        return f"torch {torch.__version__} has no oneDNN int8 linear (torch.ops.onednn.qlinear_pointwise)"
    return None


def use_int8_gemm(model: Any) -> int:
    """Run ``model``'s W8A8 int8 layers as int8 products; returns how many (0: nothing changed).

    All or nothing: if any quantized layer has another scheme, or this machine cannot multiply int8
    exactly (:func:`available`), the model stays with compressed-tensors' own decompress-on-first-forward
    path, which every layer then needs. The int8 weight is repacked into oneDNN's layout once; the
    layer's ``weight`` is left empty, so the weights are not held twice.
    """
    import torch

    verdicts = [(m, _eligible(m)) for m in model.modules()]
    quantized = [m for m, ok in verdicts if ok is not None]
    if not quantized or not all(ok for _, ok in verdicts if ok is not None) or available() is not None:
        return 0
    hook = getattr(model, "ct_decompress_hook", None)
    if hook is not None:  # compressed-tensors' decompress-on-first-forward hook
        hook.remove()
        delattr(model, "ct_decompress_hook")
    _share_inputs(model, set(map(id, quantized)))
    for module in quantized:
        weight = module.weight.detach()
        module._int8_packed = torch.ops.onednn.qlinear_prepack(weight, None)
        module._int8_channel_scale = module.weight_scale.detach().float().reshape(-1).contiguous()
        module._int8_zero_points = torch.zeros(weight.shape[0], dtype=torch.int64)
        module.weight = torch.nn.Parameter(weight.new_empty((0, weight.shape[1])), requires_grad=False)
        module.forward = types.MethodType(int8_forward, module)
    return len(quantized)


def _share_inputs(model: Any, quantized: set[int]) -> None:
    for parent in model.modules():
        for names in SHARED_INPUT:
            group = [getattr(parent, n, None) for n in names]
            group = [m for m in group if m is not None and id(m) in quantized]
            shared = _SharedInput() if len(group) > 1 else None
            for i, m in enumerate(group):
                m._int8_shared, m._int8_leads = shared, i == 0
    for m in model.modules():
        if id(m) in quantized and not hasattr(m, "_int8_shared"):
            m._int8_shared, m._int8_leads = None, True
