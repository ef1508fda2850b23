"""Worker processes that die with the process that started them.

The search's candidate workers and the benchmark's measuring process run in processes of their own. If
the process that started one is killed outright (SIGKILL, the OOM killer) nothing of it runs to stop the
child, which would go on building and registering a variant beside the search resumed after the kill. On
Linux the child asks the kernel to SIGKILL it when its parent dies (``PR_SET_PDEATHSIG``); elsewhere this
is a no-op and such a child ends at its next write to the closed pipe.
"""

from __future__ import annotations

import os
import signal
import sys

PARENT_ENV = "SLIPSTREAM_PARENT_PID"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def child_env() -> dict[str, str]:
    """What to add to a worker's environment so that :func:`die_with_parent` knows its parent."""
    return {PARENT_ENV: str(os.getpid())}


def die_with_parent() -> None:
    """Called first in a worker: be killed when the parent that set ``PARENT_ENV`` dies. The kernel watches
    the parent *thread* that started this process, so start workers from a thread that outlives them."""
    parent = os.environ.pop(PARENT_ENV, None)  # popped: this process's own children need their own
    if parent is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return
    if os.getppid() != int(parent):  # the parent died before the kernel was asked to watch it
        os.kill(os.getpid(), signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists and has not exited (one of another user's counts: it exists; a
    zombie, exited but not yet reaped by its parent, does not)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: the state letter follows the command's closing parenthesis
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True
