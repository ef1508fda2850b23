"""Linear layers through numpy's BLAS (OpenBLAS in numpy's wheels) instead of PyTorch's MKL.

PyTorch's CPU wheels multiply float32 matrices with MKL, which on AMD CPUs is slow for the few rows a
decode step has. Measured on an AMD EPYC (AVX2, one thread), SmolLM2-135M's 210 decoder matrices at
1 / 4 / 16 rows: MKL 48 / 105 / 136 ms, OpenBLAS 39 / 57 / 90 ms (``benchmarks/gemm_rows.py``,
BENCHMARKS.md). The product is the same float32 arithmetic summed in another order.

``gemm="auto"`` (the transformers engine's default) takes OpenBLAS for float32 at one thread on a CPU
whose vendor is not Intel, when numpy's BLAS is OpenBLAS; ``torch`` and ``openblas`` force one or the
other. With more threads, OpenBLAS's own thread pool and PyTorch's OpenMP threads wait for the cores
in turn (measured at two threads: each decode step 2-3x slower than either alone), so auto keeps
PyTorch's product there. Only
plain ``nn.Linear`` layers with float32 weights change (bitsandbytes and compressed-tensors layers
keep their own kernels); with gradients enabled a layer falls back to PyTorch's own product.
"""

from __future__ import annotations

import types
from typing import Any, Literal

Gemm = Literal["auto", "torch", "openblas"]
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


def resolve(gemm: str, device: str, dtype: str, threads: int | None = None) -> str:
    """The GEMM a transformers engine uses: ``torch`` or ``openblas``."""
    from slipstream.errors import InvalidConfig, Unsupported

    if gemm not in GEMMS:
        raise InvalidConfig(f"gemm must be one of {', '.join(GEMMS)}, got {gemm!r}")
    if gemm == "torch":
        return "torch"
    eligible = device == "cpu" and dtype == "float32"
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

    shared = {m.weight.data_ptr() for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    count = 0
    for module in model.modules():
        w = getattr(module, "weight", None)
        if type(module) is not torch.nn.Linear or w is None or w.dtype != torch.float32 or w.device.type != "cpu":
            continue
        if w.data_ptr() in shared:  # tied to the embeddings, which look rows up: multiply by a view
            module._blas_weight = w.detach().numpy().T
        else:  # stored [in, out] once (about 10% faster to multiply), the layer's weight a view of it
            stored = w.detach().t().contiguous()
            module.weight = torch.nn.Parameter(stored.t(), requires_grad=w.requires_grad)
            module._blas_weight = stored.numpy()
        module.forward = types.MethodType(forward, module)
        count += 1
    return count
