"""Where search candidates run: local worker processes (default) or tasks on a Ray cluster.

An executor takes candidate requests (plain JSON-able dicts, see :mod:`slipstream.search.worker`) and
yields ``(request, record)`` as each finishes, calling ``on_event(request, event)`` with progress
events (stage changes) where the transport carries them. A worker that dies still yields a record
(status ``ERROR``), so the search never loses track of a candidate.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Protocol

from slipstream.errors import MissingExtra, SlipstreamError
from slipstream.jsonlines import json_lines
from slipstream.lifetime import child_env
from slipstream.search.record import SearchRecord, Status

Request = dict[str, Any]
Record = SearchRecord
OnEvent = Callable[[Request, dict[str, Any]], None]


class Executor(Protocol):
    name: str
    workers: int

    def run(self, requests: Iterable[Request], on_event: OnEvent,
            deadline: float | None = None) -> Iterator[tuple[Request, Record]]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Each candidate in a fresh ``python -m slipstream.search.worker`` process: a crash, an out-of-memory
    kill or a leaked thread pool in one backend cannot take the search down, and every candidate starts
    from the same clean state (which keeps timings comparable). ``workers`` run at once; keep it at 1
    when the objective is a latency measured on the same machine."""

    name = "local"

    def __init__(self, workers: int = 1, python: str | None = None) -> None:
        if workers < 1:
            raise SlipstreamError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.python = python or sys.executable
        self._live: set[subprocess.Popen] = set()

    def _one(self, request: Request, on_event: OnEvent, deadline: float | None = None) -> Record:
        proc = subprocess.Popen([self.python, "-m", "slipstream.search.worker", json.dumps(request)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=os.environ | {"PYTHONUNBUFFERED": "1"} | child_env(), start_new_session=True)
        self._live.add(proc)
        stderr: list[str] = []
        drain = threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
        drain.start()
        cancelled = threading.Event()
        if deadline is not None:
            def watchdog() -> None:
                while proc.poll() is None:
                    if time.time() > deadline:
                        cancelled.set()
                        try:  # the worker and anything it started (a compiler, a server)
                            os.killpg(proc.pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                        return
                    time.sleep(1.0)

            threading.Thread(target=watchdog, daemon=True).start()
        record = None
        assert proc.stdout is not None
        for event in json_lines(proc.stdout):  # lines a library prints to stdout are skipped
            if event.get("event") == "result":
                record = SearchRecord.from_dict(event["record"])
            else:
                on_event(request, event)
        proc.wait()
        self._live.discard(proc)
        drain.join(timeout=5)
        if record is None and cancelled.is_set():
            return cancelled_record(request)
        if record is None:
            tail = "".join(stderr).strip().splitlines()[-1:] or ["no output"]
            record = SearchRecord.failed(request["candidate"], Status.ERROR,
                                         f"worker exited with code {proc.returncode}: {tail[0][:300]}")
        return record

    def run(self, requests: Iterable[Request], on_event: OnEvent,
            deadline: float | None = None) -> Iterator[tuple[Request, Record]]:
        """Up to ``workers`` candidates at a time; requests are pulled lazily, so the caller can stop
        handing them out (budget spent) and still receive the ones in flight."""
        done: queue.Queue[tuple[Request, Record]] = queue.Queue()
        pending = iter(requests)
        running = 0

        def work(request: Request) -> None:
            try:
                record = self._one(request, on_event, deadline)
            except BaseException as exc:  # never leave the search waiting for a thread that died
                record = SearchRecord.failed(request["candidate"], Status.ERROR,
                                             f"executor: {type(exc).__name__}: {exc}")
            done.put((request, record))

        def start(request: Request) -> None:
            threading.Thread(target=work, args=(request,), daemon=True).start()

        for request in pending:
            start(request)
            running += 1
            if running >= self.workers:
                break
        while running:
            result = done.get()
            running -= 1
            yield result
            nxt = next(pending, None)
            if nxt is not None:
                start(nxt)
                running += 1

    def close(self) -> None:
        """Stop workers still running (the search was interrupted): they run in their own session."""
        for proc in list(self._live):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class RayExecutor:
    """Candidates as Ray tasks (one CPU each) on an existing cluster (``address``) or a local one.
    Workers read the same store, so ``SLIPSTREAM_HOME`` must be on storage every node shares."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, num_cpus: float = 1.0) -> None:
        try:
            import ray
        except ImportError:
            raise MissingExtra("the Ray executor needs the 'ray' extra: pip install 'slipstream[ray]'") from None
        self._ray = ray
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                     runtime_env={"env_vars": {"SLIPSTREAM_HOME": os.environ.get("SLIPSTREAM_HOME", "")}}
                     if os.environ.get("SLIPSTREAM_HOME") else None)
        total = int(ray.cluster_resources().get("CPU", 1) // num_cpus) or 1
        self.workers = min(workers, total) if workers else total
        from slipstream.search.worker import run_candidate

        self._task = ray.remote(num_cpus=num_cpus, max_retries=0)(run_candidate)

    def run(self, requests: Iterable[Request], on_event: OnEvent,
            deadline: float | None = None) -> Iterator[tuple[Request, Record]]:
        ray = self._ray
        pending = iter(requests)
        running: dict[Any, Request] = {}
        for request in pending:
            running[self._task.remote(request)] = request
            on_event(request, {"event": "stage", "stage": "submitted to ray"})
            if len(running) >= self.workers:
                break
        while running:
            timeout = None if deadline is None else max(deadline - time.time(), 0.0)
            ready, _ = ray.wait(list(running), num_returns=1, timeout=timeout)
            if not ready:  # budget spent: cancel what is still running
                for ref, request in list(running.items()):
                    ray.cancel(ref, force=True)
                    yield request, cancelled_record(request)
                return
            request = running.pop(ready[0])
            try:
                record = ray.get(ready[0])
            except Exception as exc:  # a worker node lost, a task killed
                record = SearchRecord.failed(request["candidate"], Status.ERROR,
                                             f"ray task failed: {type(exc).__name__}: {str(exc)[:300]}")
            yield request, record
            nxt = next(pending, None)
            if nxt is not None:
                running[self._task.remote(nxt)] = nxt
                on_event(nxt, {"event": "stage", "stage": "submitted to ray"})

    def close(self) -> None:
        pass


def cancelled_record(request: Request) -> Record:
    return SearchRecord.failed(request["candidate"], Status.CANCELLED, "stopped when the budget ran out")


def make_executor(kind: str, workers: int | None = None, address: str | None = None) -> Executor:
    if kind == "local":
        return LocalExecutor(workers or 1)
    if kind == "ray":
        return RayExecutor(address=address, workers=workers)
    raise SlipstreamError(f"unknown executor {kind!r}: choose 'local' or 'ray'")
