"""Run a ``slipstream`` command in a real process, stop it at a chosen point, and SIGKILL it there.

The point is a function or method (``"module:Class.method"``) wrapped, through a ``sitecustomize`` on the
child's PYTHONPATH, in the child and in every Python process it starts: when the wrapped call returns
(``after=True``) or is entered, and ``when`` (a Python expression over ``args``, ``kwargs`` and ``result``)
holds, that process writes its pid into a marker file and sleeps. The test waits for the marker
and kills the process from outside, as the OOM killer or ``kill -9`` would; nothing in slipstream knows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# Loaded by every Python process started with ``hooked_env``'s PYTHONPATH (the command and any worker it
# starts): the hook is installed wherever its module imports.
_SITECUSTOMIZE = r"""
import os

if os.environ.get("SLIPSTREAM_TEST_HOOK"):
    import importlib, time
    from pathlib import Path

    hook, marker = os.environ["SLIPSTREAM_TEST_HOOK"], Path(os.environ["SLIPSTREAM_TEST_MARKER"])
    when, after = os.environ["SLIPSTREAM_TEST_WHEN"], os.environ["SLIPSTREAM_TEST_AFTER"] == "1"
    module, _, attr = hook.partition(":")
    owner = importlib.import_module(module)
    *parents, last = attr.split(".")
    for p in parents:
        owner = getattr(owner, p)
    original = getattr(owner, last)

    def pause():
        marker.write_text(str(os.getpid()))
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
"""


def hooked_env(home: Path, hook: str, *, when: str = "True", after: bool = True) -> tuple[dict[str, str], Path]:
    """The environment that pauses ``hook`` (see the module's docstring) in every Python process it reaches,
    and the marker file the pausing process writes its pid into."""
    site = home.parent / f"hook-{time.monotonic_ns()}"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    marker = site / "reached"
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    return cli_env(home) | {"PYTHONPATH": path, "SLIPSTREAM_TEST_HOOK": hook, "SLIPSTREAM_TEST_MARKER": str(marker),
                            "SLIPSTREAM_TEST_WHEN": when, "SLIPSTREAM_TEST_AFTER": "1" if after else "0"}, marker


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
    env, marker = hooked_env(home, hook, when=when, after=after)
    log = marker.with_name("stderr")  # a file, not a pipe: a chatty child never blocks on a full pipe
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "slipstream.cli.main", *args], env=env,
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
