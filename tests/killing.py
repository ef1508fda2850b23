"""Run a ``slipstream`` command in a real process, stop it at a chosen point, and SIGKILL it there.

The point is a function or method (``"module:Class.method"``) wrapped in the child process only: when the
wrapped call returns (``after=True``) or is entered, and ``when`` (a Python expression over ``args``,
``kwargs`` and ``result``) holds, the child touches a marker file and sleeps. The test waits for the marker
and kills the process from outside, as the OOM killer or ``kill -9`` would; nothing in slipstream knows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

_CHILD = r"""
import importlib, sys, time
from pathlib import Path

hook, marker, when, after = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4] == "after"
module, _, attr = hook.partition(":")
owner = importlib.import_module(module)
*parents, last = attr.split(".")
for p in parents:
    owner = getattr(owner, p)
original = getattr(owner, last)

def pause():
    marker.touch()
    while True:
        time.sleep(60)

def hooked(*args, **kwargs):
    if not after and eval(when, {"args": args, "kwargs": kwargs, "result": None}):
        pause()
    result = original(*args, **kwargs)
    if after and eval(when, {"args": args, "kwargs": kwargs, "result": result}):
        pause()
    return result

setattr(owner, last, hooked)
sys.argv = ["slipstream", *sys.argv[5:]]
from slipstream.cli.main import main
main()
"""


def cli_env(home: Path) -> dict[str, str]:
    return os.environ | {"SLIPSTREAM_HOME": str(home), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def slipstream(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The command as a user runs it (no hooks)."""
    return subprocess.run([sys.executable, "-m", "slipstream.cli.main", *args], capture_output=True, text=True,
                          env=cli_env(home), timeout=timeout)


def kill_at(home: Path, hook: str, args: list[str], *, when: str = "True", after: bool = True,
            timeout: float = 120) -> str:
    """Run ``slipstream ARGS`` until ``hook`` is reached (see the module's docstring), SIGKILL it there and
    reap it; returns what it wrote to stderr. Fails when the command ends before reaching the point."""
    marker = home.parent / f"reached-{time.monotonic_ns()}"
    log = marker.with_suffix(".stderr")  # a file, not a pipe: a chatty child never blocks on a full pipe
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", _CHILD, hook, str(marker), when,
                                 "after" if after else "before", *args], env=cli_env(home),
                                stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + timeout
    try:
        while not marker.exists():
            if proc.poll() is not None:
                raise AssertionError(f"the command ended (code {proc.returncode}) before {hook}:\n"
                                     + log.read_text()[-3000:])
            if time.monotonic() > deadline:
                raise AssertionError(f"{hook} not reached in {timeout} s")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
        return log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
