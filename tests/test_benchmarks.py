"""Every benchmark script still starts: ``python benchmarks/<group>/<script>.py --help`` prints its usage
(imports resolve after a move, the shared helpers in benchmarks/common.py are found)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*/*.py"))


def test_scripts_are_grouped():
    assert SCRIPTS, "no benchmark scripts found"
    assert not [p.name for p in BENCHMARKS.glob("*.py") if p.name != "common.py"], \
        "benchmark scripts live in a folder per question (benchmarks/README.md); only common.py sits at the top"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_help(script: Path):
    proc = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout


def test_machine_folders():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from common import machine_name
    finally:
        sys.path.remove(str(BENCHMARKS))
    assert machine_name({"cpu": "AMD EPYC", "cpu_flags": ["avx2", "avx512f", "avx512_vnni"]}) == "zen4"
    assert machine_name({"cpu": "AMD EPYC", "cpu_flags": ["avx2"]}) == "zen3"
    assert machine_name({"cpu": "Intel(R) Xeon(R) Processor", "cpu_flags": ["avx512f", "amx_int8"]}) == "xeon-amx"
    assert machine_name({"cpu": "Intel(R) Xeon(R) Processor", "cpu_flags": ["avx512f"]}) == "xeon"
    assert machine_name({"cpu": "unknown"}) == "unknown"
