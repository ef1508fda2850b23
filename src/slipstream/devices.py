"""Which device to run on: ``cpu`` or ``cuda``, detected without importing torch when possible."""

from __future__ import annotations

import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from slipstream.errors import Unsupported

DEVICES = ("cpu", "cuda")


@lru_cache(maxsize=1)
def cuda_available() -> bool:
    """Whether a CUDA GPU is usable. Asks torch only if it is already imported (importing it costs
    seconds and ~400 MB, which an engine without PyTorch should not pay)."""
    if "torch" in sys.modules:
        return bool(sys.modules["torch"].cuda.is_available())
    if not Path("/proc/driver/nvidia/version").exists() and shutil.which("nvidia-smi") is None:
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def resolve_device(device: str | None) -> str:
    """``None`` or ``auto`` -> the best device here; otherwise check the name."""
    if device in (None, "auto"):
        return "cuda" if cuda_available() else "cpu"
    if device not in DEVICES:
        raise Unsupported(f"unknown device {device!r}; use one of: auto, {', '.join(DEVICES)}")
    return device
