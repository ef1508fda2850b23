"""Linear layers through numpy's BLAS (OpenBLAS in numpy's wheels) instead of PyTorch's MKL.

PyTorch's CPU wheels multiply float32 matrices with MKL, which on AMD CPUs is slower than OpenBLAS for
the few rows a decode step has (figures: docs/engines.md#matrix-products, from
``benchmarks/kernels/gemm_rows.py``). The product is the same float32 arithmetic summed in another order.

``gemm="auto"`` (the transformers engine's default) takes OpenBLAS for float32 at one thread on a CPU
whose vendor is not Intel, when numpy's BLAS is OpenBLAS; ``torch`` and ``openblas`` force one or the
other.

``gemm="onednn"`` multiplies float32 through oneDNN with each weight reordered once into oneDNN's
blocked layout (``torch.ops.mkldnn._linear_pointwise``, the kernel PyTorch's own compiler uses on the
CPU). It is made for the few rows of a continuous batch: at 16 rows it takes about half OpenBLAS's
time, but its one-row product is slower than OpenBLAS's (docs/engines.md#matrix-products), so
auto does not take it for float32 models; it does for the float layers left in a W8A8 int8 model (the
output head), where the reordered head is also the fastest at one row. A weight tied to the embeddings
is reordered into a copy (the embeddings keep theirs); an untied layer's float weight is released after
the reorder. With more threads, OpenBLAS's own thread pool and PyTorch's OpenMP threads wait for the
cores in turn (each decode step several times slower than with either alone), so auto keeps PyTorch's
product there. Only plain ``nn.Linear`` layers with float32 weights change (bitsandbytes and
compressed-tensors layers keep their own kernels); with gradients enabled a layer falls back to
PyTorch's own product.
"""

from __future__ import annotations

import types
from typing import Any, Iterator, Literal

Gemm = Literal["auto", "torch", "openblas", "onednn"]
GEMMS: tuple[str, ...] = Gemm.__args__  # type: ignore[attr-defined]


def numpy_blas() -> str | None:
    """The BLAS numpy multiplies with (``openblas``, ``mkl``, ...), or None if threadpoolctl cannot tell."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    import numpy  # noqa: F401  (loads its BLAS, so threadpoolctl sees it)

    for pool in threadpool_info():
        if pool.get("user_api") == "blas" and "numpy" in (pool.get("filepath") or ""):
            return pool.get("internal_api")
    return None


def onednn_available() -> bool:
    import torch

    return bool(torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


def resolve(gemm: str, device: str, dtype: str, threads: int | None = None, int8_model: bool = False) -> str:
    """The GEMM a transformers engine uses for its float32 layers: ``torch``, ``openblas`` or ``onednn``
    (``int8_model``: the model's other layers run as int8 products, see :mod:`.int8_gemm`)."""
    from slipstream.errors import InvalidConfig, Unsupported

    if gemm not in GEMMS:
        raise InvalidConfig(f"gemm must be one of {', '.join(GEMMS)}, got {gemm!r}")
    if gemm == "torch":
        return "torch"
    eligible = device == "cpu" and dtype == "float32"
    if gemm == "onednn" or (gemm == "auto" and int8_model and eligible and onednn_available()):
        if not eligible:
            raise Unsupported(f"gemm 'onednn' multiplies float32 on the CPU; this engine runs {dtype} on {device}")
        if not onednn_available():
            raise Unsupported("gemm 'onednn': this PyTorch build has no oneDNN (torch.backends.mkldnn)")
        return "onednn"
    if gemm == "openblas":
        if not eligible:
            raise Unsupported(f"gemm 'openblas' multiplies float32 on the CPU; this engine runs {dtype} on {device}")
        if numpy_blas() != "openblas":
            raise Unsupported(f"gemm 'openblas': numpy here multiplies with {numpy_blas() or 'an unknown BLAS'}, "
                              "not OpenBLAS (install numpy's PyPI wheel, or use gemm='torch')")
        return "openblas"
    from slipstream.machine import cpu_vendor

    return "openblas" if eligible and threads == 1 and cpu_vendor() not in ("GenuineIntel", "") \
        and numpy_blas() == "openblas" else "torch"


def use_openblas(model: Any, threads: int | None) -> int:
    """Route ``model``'s float32 ``nn.Linear`` layers through numpy's OpenBLAS; returns how many.

    No weight is held twice: an untied layer's weight is stored transposed and the layer's ``weight``
    becomes a view of it; a weight tied to the embeddings is multiplied through a transposed view.
    """
    import numpy as np
    import torch

    if threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads, user_api="blas")

    def forward(self: Any, x: Any) -> Any:
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return torch.nn.functional.linear(x, self.weight, self.bias)
        flat = x.reshape(-1, x.shape[-1])
        if flat.dtype != torch.float32 or flat.device.type != "cpu":
            return torch.nn.functional.linear(x, self.weight, self.bias)
        out = torch.from_numpy(np.matmul(flat.contiguous().numpy(), self._blas_weight))
        if self.bias is not None:
            out += self.bias
        return out.reshape(*x.shape[:-1], out.shape[-1])

    count = 0
    for module, w, tied in _float32_linears(model):
        if tied:  # tied to the embeddings, which look rows up: multiply by a view
            module._blas_weight = w.detach().numpy().T
        else:  # stored [in, out] once (about 10% faster to multiply), the layer's weight a view of it
            stored = w.detach().t().contiguous()
            module.weight = torch.nn.Parameter(stored.t(), requires_grad=w.requires_grad)
            module._blas_weight = stored.numpy()
        module.forward = types.MethodType(forward, module)
        count += 1
    return count


def _embedding_weights(model: Any) -> set[int]:
    import torch

    return {m.weight.data_ptr() for m in model.modules() if isinstance(m, torch.nn.Embedding)}


def _float32_linears(model: Any) -> Iterator[tuple[Any, Any, bool]]:
    """``(layer, weight, tied to the embeddings)`` for each plain float32 CPU ``nn.Linear`` whose product
    is still PyTorch's (a bfloat16 head is left alone)."""
    import torch

    shared = _embedding_weights(model)
    for module in list(model.modules()):
        w = getattr(module, "weight", None)
        if type(module) is not torch.nn.Linear or w is None or w.dtype != torch.float32 or w.device.type != "cpu" \
                or getattr(module, "_slipstream_bfloat16", False):
            continue
        yield module, w, w.data_ptr() in shared


def use_bfloat16_head(model: Any) -> bool:
    """Multiply ``model``'s output head (the vocabulary projection) in bfloat16 through oneDNN: hidden states
    and a reordered bfloat16 copy of the weight in, bfloat16 logits out, returned as float32. On a CPU
    with AMX that takes a fraction of the float32 product's time, more so at many rows; without AMX it is
    not faster. The logits carry bfloat16's 8-bit mantissa (what that costs in perplexity, and the figures:
    docs/engines.md#output-head-in-bfloat16). Returns False (nothing changed) when the head is not a CPU
    ``nn.Linear``."""
    import torch

    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear or head.weight.device.type != "cpu" or not onednn_available():
        return False
    head._bf16_weight = torch.ops.mkldnn._reorder_linear_weight(head.weight.detach().to(torch.bfloat16))
    head._bf16_bias = None if head.bias is None else head.bias.detach().to(torch.bfloat16)

    def forward(self: Any, x: Any) -> Any:
        flat = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
        out = torch.ops.mkldnn._linear_pointwise(flat, self._bf16_weight, self._bf16_bias, "none", [], "")
        return out.float().reshape(*x.shape[:-1], out.shape[-1])

    head.forward = types.MethodType(forward, head)
    head._slipstream_bfloat16 = True  # use_onednn and use_openblas leave it alone
    if head.weight.data_ptr() not in _embedding_weights(model):  # an untied head's float32 weight is no longer read
        head.weight = torch.nn.Parameter(head.weight.new_empty((0, head.weight.shape[1])), requires_grad=False)
    return True


def use_onednn(model: Any) -> int:
    """Multiply ``model``'s float32 ``nn.Linear`` layers through oneDNN with reordered weights; returns
    how many. With gradients enabled a layer multiplies through PyTorch's own product (untied layers
    keep no float weight for it, so an engine's model is for inference only)."""
    import torch

    def forward(self: Any, x: Any) -> Any:
        if x.dtype != torch.float32 or x.device.type != "cpu":
            return torch.nn.functional.linear(x, self.weight, self.bias)
        flat = x.reshape(-1, x.shape[-1])
        out = torch.ops.mkldnn._linear_pointwise(flat, self._onednn_weight, self.bias, "none", [], "")
        return out.reshape(*x.shape[:-1], out.shape[-1])

    count = 0
    for module, w, tied in _float32_linears(model):
        module._onednn_weight = torch.ops.mkldnn._reorder_linear_weight(w.detach())
        if not tied:
            module.weight = torch.nn.Parameter(w.new_empty((0, w.shape[1])), requires_grad=False)
        module.forward = types.MethodType(forward, module)
        count += 1
    return count
