"""Linear layers through numpy's BLAS (OpenBLAS in numpy's wheels) instead of PyTorch's MKL.

PyTorch's CPU wheels multiply float32 matrices with MKL, which on AMD CPUs is slow for the few rows a
decode step has. Measured on an AMD EPYC (AVX2, one thread), SmolLM2-135M's 210 decoder matrices at
1 / 4 / 16 rows: MKL 48 / 105 / 136 ms, OpenBLAS 39 / 57 / 90 ms (``benchmarks/gemm_rows.py``,
BENCHMARKS.md). The product is the same float32 arithmetic summed in another order.

``gemm="auto"`` (the transformers engine's default) takes OpenBLAS for float32 on a CPU whose vendor
is not Intel, when numpy's BLAS is OpenBLAS; ``torch`` and ``openblas`` force one or the other. Only
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


def resolve(gemm: str, device: str, dtype: str) -> str:
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

    return "openblas" if eligible and cpu_vendor() not in ("GenuineIntel", "") and numpy_blas() == "openblas" \
        else "torch"


def use_openblas(model: Any, threads: int | None) -> int:
    """Route ``model``'s float32 ``nn.Linear`` layers through numpy's OpenBLAS; returns how many.

    The weights are not copied: each layer multiplies by a transposed numpy view of its own weight.
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
    for module in model.modules():
        w = getattr(module, "weight", None)
        if type(module) is torch.nn.Linear and w is not None and w.dtype == torch.float32 and w.device.type == "cpu":
            module._blas_weight = w.detach().numpy().T  # [in, out], a view of the same memory
            module.forward = types.MethodType(forward, module)
            count += 1
    return count
