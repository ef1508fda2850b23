"""``python -m slipstream.platform.worker JOB_ID``: run one job of the registry, in a process of its own.

The job's spec says which library call to make (the same the CLI makes); progress becomes events in the
registry (at most a few a second), and the job ends ``succeeded`` with its result or ``failed`` with the
error. A job cancelled meanwhile keeps its state: the service ends this process.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import traceback
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from slipstream.platform.jobs import BenchSpec, EvaluateSpec, ImportSpec, OptimizeSpec, SearchSpec
from slipstream.store import Store

_EVERY_S = 0.3


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class EventProgress:
    """slipstream's Progress protocol, written to the job's events and its ``progress`` field."""

    def __init__(self, registry: Any, job_id: str):
        self.registry, self.job_id = registry, job_id
        self._last = 0.0
        self.done: float = 0.0
        self.total: float | None = None
        self.stage, self.started = "", time.monotonic()

    def _emit(self, stage: str, done: float, total: float | None, force: bool = False,
              time_left_s: float | None = None) -> None:
        if stage != self.stage or done < self.done:
            self.stage, self.started = stage, time.monotonic()
        self.done, self.total = done, total
        now = time.monotonic()
        if not force and now - self._last < _EVERY_S:
            return
        self._last = now
        fraction = round(done / total, 4) if total else None
        if time_left_s is None and total and 0 < done < total:  # at the stage's pace so far
            time_left_s = (now - self.started) * (total - done) / done
        progress = {"stage": stage, "done": done, "total": total, "fraction": fraction,
                    "time_left_s": None if time_left_s is None else round(max(time_left_s, 0.0), 1)}
        self.registry.update_job(self.job_id, progress=progress)
        self.registry.add_job_event(self.job_id, {"type": "progress", **progress})

    @contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Any]:
        progress = self

        class _Task:
            done, desc, tot = 0.0, description, total

            def advance(self, amount: float = 1) -> None:
                self.done += amount
                progress._emit(self.desc, self.done, self.tot)

            def update(self, *, description: str | None = None, total: float | None = None) -> None:
                self.desc = description or self.desc
                self.tot = total if total is not None else self.tot
                progress._emit(self.desc, self.done, self.tot)

        t = _Task()
        self._emit(description, 0, total, force=True)
        yield t
        self._emit(t.desc, t.tot or t.done, t.tot, force=True)

    def log(self, message: str) -> None:
        print(message, flush=True)
        self.registry.add_job_event(self.job_id, {"type": "log", "message": message})


class SearchEvents:
    """A search's events as the job's progress (candidate i of n) and events (each candidate's outcome)."""

    def __init__(self, progress: EventProgress):
        self.progress = progress

    def __call__(self, e: dict[str, Any]) -> None:
        kind = e.get("event")
        left = e.get("time_left_s")
        if kind == "start":
            rung = "screen and probe" if e.get("rung") == "probe" else "full measurement"
            self.progress._emit(f"{rung} {e['index']}/{e['of']}: {e['label']}", e["index"] - 1, e["of"],
                                force=True, time_left_s=left)
        elif kind == "stage":
            self.progress._emit(f"{e.get('label')}: {e.get('stage')}", self.progress.done, self.progress.total,
                                time_left_s=left)
        elif kind == "finished":
            r = e["record"]
            self.progress.registry.add_job_event(self.progress.job_id, {
                "type": "candidate", "label": r.label, "name": r.name, "status": getattr(r.status, "value", r.status),
                "drop": r.drop, "objective_ratio": r.objective_ratio, "size_bytes": r.size_bytes,
                "reason": r.reason, "best": e.get("best"), "time_left_s": left})
        elif kind == "log":
            self.progress.log(str(e.get("message")))
        elif kind in ("space", "confirm", "done", "reference"):
            message = {"space": lambda: f"{e['candidates']} candidates ({e['resumed']} already done)",
                       "confirm": lambda: f"confirming {', '.join(e['names'])} side by side with the original",
                       "done": lambda: str(e.get("summary")),
                       "reference": lambda: f"original: {e.get('stage')}"}[kind]()
            self.progress.log(message)


def run(job: Any, store: Store, progress: EventProgress) -> dict[str, Any]:
    """The job's library call; its result as JSON-ready data."""
    if job.kind == "import":
        from slipstream.models.intake import import_model

        spec = ImportSpec.model_validate(job.spec)
        uploads = (store.home / "uploads").resolve()
        try:
            variant = import_model(spec.source, spec.name, store=store, progress=progress)
        finally:
            try:  # an upload's files (uploads/ID/...): in the store now, or refused; either way done with
                upload = Path(spec.source).resolve().relative_to(uploads).parts[0]
            except (ValueError, IndexError):
                upload = None
            if upload:
                shutil.rmtree(uploads / upload, ignore_errors=True)
        return {"variant": variant.name}
    if job.kind == "search":
        from slipstream.search.run import search

        spec = SearchSpec.model_validate(job.spec)
        recipe_file = None
        if spec.recipes is not None:  # the same path on every attempt: the search's ledger (its id) follows it
            recipe_file = store.home / "jobs" / f"{job.id}.recipes.json"
            recipe_file.write_text(json.dumps(spec.recipes))
        result = search(spec.settings(str(recipe_file) if recipe_file else None, store), store=store,
                        listener=SearchEvents(progress))
        return json.loads(json.dumps(result.to_dict(), default=str))
    if job.kind == "optimize":
        from slipstream.pipeline import optimize

        spec = OptimizeSpec.model_validate(job.spec)
        if spec.steps is not None:
            from slipstream.pipeline import build

            variant = build(spec.model, spec.recipe(), store=store, progress=progress)
            return {"variant": variant.name, "size_bytes": variant.size_bytes, "technique": variant.technique}
        technique, options = spec.technique_and_options()
        variant = optimize(spec.model, technique, options, name=spec.name, store=store, progress=progress)
        return {"variant": variant.name, "size_bytes": variant.size_bytes, "technique": variant.technique}
    if job.kind == "evaluate":
        from slipstream.evaluation.run import evaluate

        spec = EvaluateSpec.model_validate(job.spec)
        reports = [evaluate(spec.model, store=store, progress=progress, max_tokens=spec.max_tokens)]
        reports += [evaluate(spec.model, store=store, progress=progress, task=t) for t in spec.tasks]
        return {"reports": [r.to_dict() for r in reports]}
    if job.kind == "bench":
        from slipstream.benchmark.run import BenchSettings, bench

        spec = BenchSpec.model_validate(job.spec)
        settings = BenchSettings(threads=spec.threads, batch_sizes=tuple(spec.batch_sizes))
        return {"report": bench(spec.model, settings=settings, store=store, progress=progress).to_dict()}
    raise ValueError(f"unknown job kind {job.kind!r}")


def main(job_id: str) -> int:
    store = Store()
    registry = store.registry
    job = registry.get_job(job_id)
    if job is None:
        print(f"no job {job_id}", file=sys.stderr)
        return 2
    registry.update_job(job_id, started=_now())
    progress = EventProgress(registry, job_id)
    try:
        result = run(job, store, progress)
    except Exception as exc:  # noqa: BLE001 - every failure is the job's result
        traceback.print_exc()
        if registry.get_job(job_id).state == "running":
            registry.update_job(job_id, state="failed", error=f"{exc.__class__.__name__}: {exc}", finished=_now())
            registry.add_job_event(job_id, {"type": "state", "state": "failed", "error": str(exc)})
        return 1
    if registry.get_job(job_id).state == "running":
        registry.update_job(job_id, state="succeeded", result=result, finished=_now())
        registry.add_job_event(job_id, {"type": "state", "state": "succeeded", "result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
