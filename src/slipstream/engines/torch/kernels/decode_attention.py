"""Decode attention for a continuous batch on CPU: one new query token per row, each row reading its
own columns of the shared key/value buffers, every key/value head read once for all the query heads
that share it (grouped-query attention).

PyTorch's CPU ``scaled_dot_product_attention`` with one query token per row reads each key/value head
once per *query* head (SmolLM2: 3 times) in small blocks, and so reaches a small share of the core's
memory bandwidth at serving context lengths, where attention is a large part of a many-row decode step
(figures: docs/engines.md#decode-attention).
This kernel is a plain C loop (compiled on first use with the system C compiler, ``-O3 -march=native``,
and cached under ``~/.cache/slipstream/kernels``; no PyTorch headers): per row and key/value head it
streams the row's keys once, scoring all of that head's query heads together, then its values once.
Softmax runs in float32 with the maximum subtracted, as PyTorch's does. Where no compiler is found, or
the tensors are not float32, the engine keeps PyTorch's kernel (and with its option
``decode_attention="torch"``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* q: [rows, heads, dim]; k, v: [buffer rows, kv_heads, cols, dim]; lo/hi: per row, the columns
   [lo, hi) it attends to; row_index: the buffer row of each query row; out: [rows, heads, dim]. */
void decode_attention(const float *q, const float *k, const float *v, float *out,
                      const int64_t *row_index, const int64_t *lo, const int64_t *hi,
                      int64_t rows, int64_t heads, int64_t kv_heads, int64_t cols, int64_t dim,
                      float scale, float *scratch) {
    const int64_t group = heads / kv_heads;
    for (int64_t r = 0; r < rows; r++) {
        const int64_t a = lo[r], b = hi[r], n = b - a;
        for (int64_t h = 0; h < kv_heads; h++) {
            const float *kb = k + ((row_index[r] * kv_heads + h) * cols + a) * dim;
            const float *vb = v + ((row_index[r] * kv_heads + h) * cols + a) * dim;
            const float *qh = q + (r * heads + h * group) * dim;
            float *oh = out + (r * heads + h * group) * dim;
            float *s = scratch; /* [group, n] */
            for (int64_t c = 0; c < n; c++) {
                const float *kc = kb + c * dim;
                for (int64_t g = 0; g < group; g++) {
                    const float *qg = qh + g * dim;
                    float acc = 0.0f;
                    for (int64_t d = 0; d < dim; d++) acc += qg[d] * kc[d];
                    s[g * n + c] = acc * scale;
                }
            }
            for (int64_t g = 0; g < group; g++) {
                float *sg = s + g * n, m = -INFINITY, sum = 0.0f;
                for (int64_t c = 0; c < n; c++) m = sg[c] > m ? sg[c] : m;
                for (int64_t c = 0; c < n; c++) { sg[c] = expf(sg[c] - m); sum += sg[c]; }
                const float inv = 1.0f / sum;
                for (int64_t c = 0; c < n; c++) sg[c] *= inv;
                float *og = oh + g * dim;
                for (int64_t d = 0; d < dim; d++) og[d] = 0.0f;
            }
            for (int64_t c = 0; c < n; c++) {
                const float *vc = vb + c * dim;
                for (int64_t g = 0; g < group; g++) {
                    const float p = s[g * n + c];
                    float *og = oh + g * dim;
                    for (int64_t d = 0; d < dim; d++) og[d] += p * vc[d];
                }
            }
        }
    }
}
"""

_lock = threading.Lock()
_lib: Any = None
_tried = False


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "slipstream" / "kernels"


def _compile() -> Any:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        return None
    # reassociation lets the compiler vectorize the dot products (sums in a different order, as any
    # SIMD kernel does); no -ffast-math: the softmax needs -inf and exact exp
    flags = ["-O3", "-march=native", "-ffp-contract=fast", "-fassociative-math", "-fno-signed-zeros",
             "-fno-trapping-math", "-shared", "-fPIC"]
    key = hashlib.sha256((SOURCE + " ".join(flags) + compiler + os.uname().machine).encode()).hexdigest()[:16]
    cpu = hashlib.sha256(Path("/proc/cpuinfo").read_bytes() if Path("/proc/cpuinfo").exists() else b"").hexdigest()[:8]
    target = _cache_dir() / f"decode_attention-{key}-{cpu}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            src = Path(tmp) / "decode_attention.c"
            src.write_text(SOURCE)
            built = Path(tmp) / "out.so"
            done = subprocess.run([compiler, *flags, str(src), "-o", str(built), "-lm"], capture_output=True, timeout=120)
            if done.returncode != 0:
                return None
            os.replace(built, target)  # atomic: concurrent builds leave one whole file
    lib = ctypes.CDLL(str(target))
    lib.decode_attention.restype = None
    lib.decode_attention.argtypes = [ctypes.c_void_p] * 7 + [ctypes.c_int64] * 5 + [ctypes.c_float, ctypes.c_void_p]
    return lib


def available() -> bool:
    """Whether the kernel is built (building it on the first call). The transformers engine's option
    ``decode_attention="torch"`` keeps PyTorch's kernel even where this one is available."""
    global _lib, _tried
    if not _tried:
        with _lock:
            if not _tried:
                try:
                    _lib = _compile()
                except (OSError, subprocess.SubprocessError):
                    _lib = None
                _tried = True
    return _lib is not None


def decode_attention(query: Any, key: Any, value: Any, rows: Any, lo: Any, hi: Any, scale: float) -> Any:
    """``query`` [n, heads, dim]; ``key``/``value`` [buffer rows, kv_heads, columns, dim] (contiguous,
    float32); query row ``i`` attends to columns ``lo[i]:hi[i]`` of buffer row ``rows[i]``. Returns
    [n, heads, dim]."""
    import torch

    if not available():
        raise RuntimeError("the decode attention kernel is not available (no C compiler?)")
    assert query.dtype == key.dtype == value.dtype == torch.float32
    assert key.is_contiguous() and value.is_contiguous() and key.shape == value.shape
    q = query.contiguous()
    n, heads, dim = q.shape
    _, kv_heads, cols, kdim = key.shape
    assert kdim == dim and heads % kv_heads == 0
    rows, lo, hi = (torch.as_tensor(t, dtype=torch.int64).contiguous() for t in (rows, lo, hi))
    assert len(rows) == len(lo) == len(hi) == n and n > 0
    assert int((hi - lo).min()) >= 1 and int(lo.min()) >= 0 and int(hi.max()) <= cols
    assert 0 <= int(rows.min()) and int(rows.max()) < key.shape[0]
    out = torch.empty_like(q)
    scratch = torch.empty((heads // kv_heads) * int((hi - lo).max()), dtype=torch.float32)
    _lib.decode_attention(q.data_ptr(), key.data_ptr(), value.data_ptr(), out.data_ptr(), rows.data_ptr(),
                          lo.data_ptr(), hi.data_ptr(), n, heads, kv_heads, cols, dim, float(scale),
                          scratch.data_ptr())
    return out
