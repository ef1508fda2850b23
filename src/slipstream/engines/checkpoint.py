"""What a Hugging Face checkpoint asks of an engine: its quantization scheme (read from
config.json's compressed-tensors ``quantization_config``), head size and vocabulary; and what the
host offers (CPU flags, GPU compute capability), read without importing torch."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

FP8_CAPABILITY = (8, 9)


@dataclass(frozen=True)
class Checkpoint:
    scheme: str  # "none", "w4a16", "w8a16", "w8a8-int8", "fp8", or "other"
    head_dim: int | None
    vocab_size: int
    max_position: int


def describe(path: Path) -> Checkpoint:
    """Read what matters to vLLM from a Hugging Face checkpoint's config.json."""
    cfg = json.loads((Path(path) / "config.json").read_text())
    text = cfg.get("text_config", cfg)
    heads = text.get("num_attention_heads")
    head_dim = text.get("head_dim") or (text["hidden_size"] // heads if heads and text.get("hidden_size") else None)
    return Checkpoint(_scheme(cfg.get("quantization_config")), head_dim, int(text.get("vocab_size", 0)),
                      int(text.get("max_position_embeddings") or 2048))


def _scheme(q: dict | None) -> str:
    if not q:
        return "none"
    if q.get("quant_method") != "compressed-tensors":
        return "other"
    groups = list((q.get("config_groups") or {}).values())
    if not groups:
        return "other"
    w, a = groups[0].get("weights") or {}, groups[0].get("input_activations")
    if w.get("type") == "float" and w.get("num_bits") == 8:
        return "fp8"
    if w.get("type") == "int" and not a:
        return f"w{w.get('num_bits')}a16"
    if w.get("type") == "int" and a and a.get("type") == "int" and a.get("num_bits") == 8:
        return "w8a8-int8"
    return "other"


def gpu_capability() -> tuple[int, int] | None:
    """The first GPU's compute capability from nvidia-smi (no torch import), or None."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10).stdout.split()
        major, minor = out[0].split(".")
        return int(major), int(minor)
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        return None


def check_fp8(path: Path, device: str, engine: str, capability: tuple[int, int] | None = None) -> None:
    """Refuse an FP8 checkpoint on a device without FP8 compute, instead of an emulation whose speed
    says nothing about FP8."""
    from slipstream.errors import Unsupported

    if describe(path).scheme != "fp8":
        return
    if device != "cuda":
        raise Unsupported(f"engine {engine!r}: {Path(path).name} is FP8, which needs an NVIDIA GPU with compute "
                          f"capability 8.9+ (Ada, Hopper or newer); this device is {device!r}")
    capability = capability or gpu_capability()
    if capability is not None and capability < FP8_CAPABILITY:
        raise Unsupported(f"engine {engine!r}: {Path(path).name} is FP8, which needs compute capability 8.9+; "
                          f"this GPU has {capability[0]}.{capability[1]}")
