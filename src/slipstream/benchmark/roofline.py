"""How close a variant's decode speed comes to what the hardware allows.

Decoding one token at batch 1 must read every weight once (plus the KV cache so far), so memory
bandwidth caps tokens/s at ``bandwidth / bytes_per_token``; the multiply-adds (two FLOPs per weight)
cap it at ``flops / (2 * parameters)``. The lower cap is the limit; the measured speed divided by it
is the share of the limit reached. This machine's bandwidth and matrix-multiply rate are measured
once per thread count and cached in ``$SLIPSTREAM_HOME/roofline.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from slipstream.machine import describe_machine

WEIGHT_FILES = {"hf": (".safetensors",), "ctranslate2": ("model.bin",), "gguf": (".gguf",),
                "onnx": (".onnx", ".onnx_data", ".data"), "openvino": ("openvino_model.bin",)}


@dataclass(frozen=True)
class MachinePeaks:
    threads: int
    bandwidth_bytes_per_s: float  # streaming read of a buffer much larger than the caches
    matmul_flops_per_s: float  # fp32 GEMM, 2048 x 2048
    measured: str  # when
    machine: str  # cpu model, to invalidate the cache on another machine


def measure_peaks(threads: int, repeats: int = 5) -> MachinePeaks:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        buf = torch.ones(128 * 1024 * 1024 // 4 * 4, dtype=torch.float32)  # 512 MiB, far beyond any cache
        best_read = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            buf.sum()
            best_read = min(best_read, time.perf_counter() - start)
        del buf
        n = 2048
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        best_mm = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best_mm = min(best_mm, time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return MachinePeaks(threads, 512 * 1024 * 1024 / best_read, 2 * n**3 / best_mm,
                        time.strftime("%Y-%m-%dT%H:%M:%S"), describe_machine()["cpu"])


def machine_peaks(home: Path, threads: int, refresh: bool = False) -> MachinePeaks:
    """Cached measurement of this machine's peaks at ``threads`` threads."""
    cache = home / "roofline.json"
    data: dict[str, Any] = json.loads(cache.read_text()) if cache.exists() else {}
    key, cpu = str(threads), describe_machine()["cpu"]
    if not refresh and key in data and data[key].get("machine") == cpu:
        return MachinePeaks(**data[key])
    peaks = measure_peaks(threads)
    data[key] = asdict(peaks)
    cache.write_text(json.dumps(data, indent=2))
    return peaks


@dataclass(frozen=True)
class TokenCost:
    parameters: int  # parameters multiplied per decoded token
    weight_bytes: float  # bytes of weights read per decoded token
    kv_bytes: float  # bytes of KV cache read per decoded token (at the mean context length)

    @property
    def bytes_per_token(self) -> float:
        return self.weight_bytes + self.kv_bytes


def token_cost(variant_path: Path, fmt: str, config: dict, context_tokens: int, kv_bytes_per_value: int = 4,
               parameters: int | None = None) -> TokenCost:
    """Bytes and parameters one decoded token touches, from the variant's weight files and the
    architecture (``config``: the transformers config as a dict)."""
    suffixes = WEIGHT_FILES.get(fmt, (".safetensors", ".bin"))
    files = [p for p in Path(variant_path).rglob("*") if p.is_file() and p.name.endswith(suffixes)]
    total = float(sum(p.stat().st_size for p in files))
    hidden = int(config["hidden_size"])
    vocab = int(config["vocab_size"])
    layers = int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    params = parameters or 0
    tied = bool(config.get("tie_word_embeddings", False))
    if params and not tied:
        # The input embedding table is looked up (one row), not read whole; the output head is.
        total -= total * (vocab * hidden) / params
        params -= vocab * hidden
    kv = 2 * layers * kv_heads * head_dim * context_tokens * kv_bytes_per_value
    return TokenCost(params, total, float(kv))


def roofline(decode_tokens_per_s: float, cost: TokenCost, peaks: MachinePeaks) -> dict:
    memory_limit = peaks.bandwidth_bytes_per_s / cost.bytes_per_token
    compute_limit = peaks.matmul_flops_per_s / (2 * cost.parameters) if cost.parameters else float("inf")
    limit = min(memory_limit, compute_limit)
    return {
        "bytes_per_token": cost.bytes_per_token,
        "weight_bytes_per_token": cost.weight_bytes,
        "kv_bytes_per_token": cost.kv_bytes,
        "bandwidth_bytes_per_s": peaks.bandwidth_bytes_per_s,
        "matmul_flops_per_s": peaks.matmul_flops_per_s,
        "memory_bound_tokens_per_s": memory_limit,
        "compute_bound_tokens_per_s": compute_limit,
        "bound": "memory" if memory_limit <= compute_limit else "compute",
        "limit_tokens_per_s": limit,
        "share_of_limit": decode_tokens_per_s / limit,
        "threads": peaks.threads,
    }
