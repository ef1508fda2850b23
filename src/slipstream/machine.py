"""What machine a figure was measured on, stored with every result."""

from __future__ import annotations

import os
import platform
from functools import lru_cache


@lru_cache(maxsize=1)
def describe_machine() -> dict:
    info = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "cpu_flags": _cpu_flags(),
    }
    try:
        import psutil

        info["memory_bytes"] = psutil.virtual_memory().total
        info["physical_cpus"] = psutil.cpu_count(logical=False)
    except ImportError:
        pass
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> list[str]:
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16", "fma")
    flags = cpu_flags()
    return [w for w in wanted if w in flags]


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (``/proc/cpuinfo``; empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@lru_cache(maxsize=1)
def cpu_vendor() -> str:
    """``GenuineIntel``, ``AuthenticAMD``, ... (empty where /proc/cpuinfo does not say)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def has_int8_dot_product() -> bool:
    """Whether this CPU multiplies uint8 by int8 with 32-bit sums (VNNI or AMX). Without it, x86 int8
    kernels (ONNX Runtime's, oneDNN's) add pairs of products in 16 bits, which saturate when 8-bit
    weights meet large uint8 activations."""
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})
