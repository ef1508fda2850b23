"""Several processes write one registry at once, as the CLI and the platform's service and workers do: no
"database is locked", no lost row, and no job handed to two claimers. On SQLite and on PostgreSQL
(tests/store/conftest.py); the processes are real ones (tests/store/writers.py and ``slipstream models
import``), started together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

from slipstream.store import Store
from slipstream.store.registry import job_events_t

ROOT = Path(__file__).resolve().parents[2]
WRITERS, CLAIMERS, JOBS = 3, 4, 120


def _start(args: list[str], out: Path, env: dict | None = None) -> tuple[subprocess.Popen, Path]:
    """``args`` in a process of its own, its output in files (a pipe nobody reads could block it)."""
    err = out.with_suffix(".err")
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen(args, stdout=o, stderr=e, cwd=ROOT, env=env or os.environ | {"OMP_NUM_THREADS": "1"})
    return proc, err


def _finish(proc: subprocess.Popen, out: Path, err: Path, timeout: float = 300) -> str:
    code = proc.wait(timeout)
    stderr = err.read_text()
    assert code == 0, f"{proc.args} exited {code}:\n{stderr[-3000:]}"
    assert "locked" not in stderr.lower() and "Traceback" not in stderr, stderr[-3000:]
    return out.read_text()


def _gate(go: Path, n: int, procs: list) -> None:
    """Open the gate ``go`` once the ``n`` processes wait at it (each has touched ``ready-K``)."""
    deadline = time.monotonic() + 120
    while len(list(go.parent.glob("ready-*"))) < n:
        assert all(p.poll() is None for p, _ in procs), "a process ended before the gate"
        assert time.monotonic() < deadline, "the processes never reached the gate"
        time.sleep(0.01)
    go.touch()


def test_the_cli_and_direct_writers_write_at_once_and_nothing_is_lost(tmp_path, tiny_llama_dir):
    home, go, stop = tmp_path / "home", tmp_path / "go", tmp_path / "stop"  # a new store: opened by all at once
    writers = [_start([sys.executable, "-m", "tests.store.writers", "write", str(home), str(k), str(go), str(stop)],
                      tmp_path / f"writer{k}.out") for k in range(WRITERS)]
    cli_env = os.environ | {"SLIPSTREAM_HOME": str(home), "OMP_NUM_THREADS": "1"}
    imports = [_start([sys.executable, "-m", "slipstream.cli.main", "models", "import", str(tiny_llama_dir),
                       "--name", f"cli{k}", "--json"], tmp_path / f"import{k}.out", env=cli_env) for k in range(2)]
    _gate(go, WRITERS, writers)
    started = time.monotonic()
    try:
        imported = [json.loads(_finish(p, tmp_path / f"import{k}.out", err)) for k, (p, err) in enumerate(imports)]
        stop.touch()  # the writers wrote all the while the imports ran
        wrote = [json.loads(_finish(p, tmp_path / f"writer{k}.out", err)) for k, (p, err) in enumerate(writers)]
    finally:
        stop.touch()
        for p, _ in writers + imports:
            p.kill()
            p.wait()
    took = time.monotonic() - started

    store = Store(home)
    registry = store.registry
    assert [i["name"] for i in imported] == ["cli0", "cli1"]
    for name in ("cli0", "cli1"):
        store.verify(name)
    names = {v.name for v in registry.variants()}
    expected = {n for w in wrote for n in w["variants"]}
    assert names == expected | {"cli0", "cli1"}, "rows lost"
    results = registry.results(kind="bench")
    assert sorted(r.id for r in results) == sorted(i for w in wrote for i in w["results"])
    jobs = registry.jobs()
    assert {j.id for j in jobs} == {j for w in wrote for j in w["jobs"]}
    assert all(j.state == "cancelled" for j in jobs)
    with registry._read() as conn:
        events = set(conn.execute(sa.select(job_events_t.c.id)).scalars())
    assert events == {e for w in wrote for e in w["events"]}
    rounds = sum(len(w["variants"]) for w in wrote)
    print(f"\n{WRITERS} writers ({rounds} rounds of 5 writes) and 2 imports in {took:.1f} s")


def test_claim_job_never_hands_one_job_to_two_processes(tmp_path, store):
    ids = [store.registry.add_job("bench", {"n": i}).id for i in range(JOBS)]
    go = tmp_path / "go"
    claimers = [_start([sys.executable, "-m", "tests.store.writers", "claim", str(store.home), str(k), str(go)],
                       tmp_path / f"claimer{k}.out") for k in range(CLAIMERS)]
    _gate(go, CLAIMERS, claimers)
    try:
        claimed = [json.loads(_finish(p, tmp_path / f"claimer{k}.out", err)) for k, (p, err) in enumerate(claimers)]
    finally:
        for p, _ in claimers:
            p.kill()
            p.wait()
    every = [j for c in claimed for j in c]
    assert len(every) == len(set(every)) == JOBS, "a job was claimed twice, or not at all"
    assert set(every) == set(ids)
    assert sum(1 for c in claimed if c) >= 2  # they did claim side by side
    for k, mine in enumerate(claimed):
        for job_id in mine:
            job = store.registry.get_job(job_id)
            assert (job.state, job.worker, job.result) == ("succeeded", f"claimer-{k}", {"by": str(k)})
            assert [e["by"] for e in store.registry.job_events(job_id)] == [str(k)]
    assert store.registry.claim_job("late") is None
    print(f"\nclaims per process: {[len(c) for c in claimed]}")
