"""Processes that write one registry at the same time (tests/store/test_concurrency.py starts them).

``python -m tests.store.writers write HOME K GO STOP``: says it is ready (the file ready-K beside GO), waits
for the file GO, opens the store (so several processes open, and migrate, a new database at once), then
writes a variant, a result, a job with an event and an update, and reads them back, over and over, at least
``ROUNDS`` times and until the file STOP exists; prints what it wrote as JSON.

``python -m tests.store.writers claim HOME K GO``: waits for GO, then claims queued jobs until none is left,
finishing each (an event and ``succeeded``); prints the ids it claimed as JSON.

The database is the store's: ``$SLIPSTREAM_DATABASE_URL`` when set, else HOME/registry.sqlite.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from slipstream.store import Store
from slipstream.store.registry import VariantRow, now

ROUNDS = 25


def _wait(path: Path, k: str) -> None:
    """Say this process is ready (the file ``ready-K`` beside ``path``), then wait for ``path``."""
    path.with_name(f"ready-{k}").touch()
    deadline = time.monotonic() + 120
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} never appeared")
        time.sleep(0.005)


def write(home: str, k: str, go: str, stop: str) -> dict:
    _wait(Path(go), k)
    registry = Store(home).registry
    wrote: dict[str, list] = {"variants": [], "results": [], "jobs": [], "events": []}
    i = 0
    while i < ROUNDS or not Path(stop).exists():
        name = f"w{k}-{i}"
        registry.add_variant(VariantRow(name=name, kind="variant", format="hf", architecture=None, parameters=i,
                                        size_bytes=i, sha256="0" * 64, source="writer", parent=None,
                                        technique={"writer": k}, device=None, path=f"variants/{name}",
                                        created=now()))
        wrote["variants"].append(name)
        wrote["results"].append(registry.add_result(name, "bench", "k", {"i": i}, {"tps": float(i)}, {}, {}))
        job = registry.add_job("bench", {"model": name})
        wrote["jobs"].append(job.id)
        wrote["events"].append(registry.add_job_event(job.id, {"type": "log", "message": name}))
        registry.update_job(job.id, state="cancelled", error="a writer's job")
        assert registry.get_variant(name) is not None and registry.results(name)[0].settings == {"i": i}
        if i % 20 == 0:
            assert len(registry.variants(kind="variant")) >= i + 1
        i += 1
        time.sleep(0.02)  # leave the CPUs some room for the imports running beside
    return wrote


def claim(home: str, k: str, go: str) -> list[str]:
    _wait(Path(go), k)
    registry = Store(home).registry
    claimed = []
    while (job := registry.claim_job(f"claimer-{k}")) is not None:
        assert job.state == "running" and job.worker == f"claimer-{k}"
        claimed.append(job.id)
        registry.add_job_event(job.id, {"type": "state", "state": "succeeded", "by": k})
        registry.update_job(job.id, state="succeeded", finished=now(), result={"by": k})
    return claimed


if __name__ == "__main__":
    what, *args = sys.argv[1:]
    print(json.dumps(write(*args) if what == "write" else claim(*args)))
