"""Jobs: long work (import, optimize, evaluate, bench) as rows in the registry, run in worker processes.

A job is created ``queued`` with a typed spec (:data:`SPECS`); the :class:`Runner` in the service claims
queued jobs (at most ``max_workers`` at once, the claim atomic in the database, so two services sharing a
registry never run one job twice) and starts ``python -m slipstream.platform.worker JOB_ID`` for each. The
worker calls the library, reports progress as events, and records the result or the error. A cancel
ends the worker's process group. When the service starts, a job left ``running`` by a service that died is
queued again if slipstream resumes its kind (an optimization: staging is cleaned, a distillation resumes
from its checkpoint), else marked failed with the reason; none is lost.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from slipstream.errors import InvalidConfig, SlipstreamError
from slipstream.lifetime import pid_alive
from slipstream.serving.settings import describe
from slipstream.store import Store

log = logging.getLogger("slipstream.platform")

# kinds a restarted service runs again where they stopped: an optimization's staging is cleaned and a
# distillation resumes from its checkpoint; a search skips the candidates its ledger already holds
RESUMABLE = {"optimize", "search"}
MAX_ATTEMPTS = 3


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImportSpec(_Spec):
    source: str  # a bundled name, a directory, a .gguf file or a hub id
    name: Optional[str] = None


class OptimizeSpec(_Spec):
    model: str
    technique: Optional[str] = None
    options: dict[str, Any] = Field(default_factory=dict)
    name: Optional[str] = None
    # a recipe: techniques applied in order, each {"technique": ..., its options...}; each step's variant
    # kept (named <input>-<slug>), so a recipe run again does only what is left
    steps: Optional[list[dict[str, Any]]] = Field(None, min_length=1)
    # GALE's pair, mapped onto a technique when `technique` is not given
    optimizationType: Optional[Literal["CTranslate2", "vLLM"]] = None
    quantizationType: Optional[str] = None

    def recipe(self) -> list[Any]:
        """The steps as technique configs (refused now, naming the step, when one does not parse)."""
        from slipstream.techniques.registry import config_from_dict

        configs = []
        for i, step in enumerate(self.steps or []):
            if not isinstance(step.get("technique"), str):
                raise InvalidConfig(f"steps[{i}] needs a technique")
            try:
                configs.append(config_from_dict(step))
            except SlipstreamError as exc:
                raise InvalidConfig(f"steps[{i}]: {exc}") from None
        return configs

    def technique_and_options(self) -> tuple[str, dict[str, Any]]:
        if self.technique:
            return self.technique, dict(self.options)
        if self.optimizationType == "CTranslate2":
            return "ctranslate2", {**self.options, "quantization": self.quantizationType or "int8"}
        if self.optimizationType == "vLLM":
            quant = (self.quantizationType or "awq").lower()
            if quant not in ("awq", "gptq", "w8a8", "fp8"):
                raise InvalidConfig(f"quantizationType {self.quantizationType!r} for vLLM: use AWQ, GPTQ, W8A8 or FP8")
            return quant, dict(self.options)
        raise InvalidConfig("an optimization needs a technique, or GALE's optimizationType and quantizationType")


class EvaluateSpec(_Spec):
    model: str
    max_tokens: int = Field(8192, ge=64)
    tasks: list[str] = Field(default_factory=list)


class BenchSpec(_Spec):
    model: str
    threads: int = Field(1, ge=1)
    batch_sizes: list[int] = Field(default_factory=lambda: [1])


class SearchSpec(_Spec):
    """``slipstream auto``'s settings: the gate (metric and allowed drop), the objective and the budget."""

    model: str
    metric: Optional[str] = None  # None: perplexity, or embeddings.cosine_mean for an embedding model
    max_drop: str = "1%"
    # WikiText-2 gates: the mean KL divergence from the original must hold too (nats per token; "auto":
    # ln(1 + the perplexity drop allowed); None: off)
    max_kl: Union[Annotated[float, Field(ge=0)], Literal["auto"], None] = "auto"
    objective: Literal["latency", "throughput", "size", "cost"] = "latency"
    budget: str = "30m"
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    eval_tokens: int = Field(8192, ge=64)
    screen_tokens: int = Field(2048, ge=64)
    # engine threads each candidate is benchmarked with (the fastest kept): "auto" is one and every core
    threads: Union[Annotated[int, Field(ge=1)], list[Annotated[int, Field(ge=1)]], Literal["auto"]] = "auto"
    confirm: int = Field(2, ge=0)
    run_all: bool = False
    # what the benchmark runs: "fixed", or a prompt set (grounded, mt-bench, vicuna, file:PATH), on which engines
    # that take it are also measured with prompt-lookup drafts of prompt_lookup tokens (0: never)
    workload: str = "fixed"
    prompt_lookup: int = Field(8, ge=0)
    # a recipe file's contents (docs/search.md), extending the space or, with only_recipes, replacing it
    recipes: Optional[dict[str, Any]] = None
    only_recipes: bool = False

    def settings(self, recipe_file: Optional[str] = None, store: Any = None) -> Any:
        from slipstream.evaluation.gate import Gate
        from slipstream.search.settings import SearchSettings, default_gate, model_task, parse_duration

        metric = self.metric or default_gate(model_task(self.model, store)).metric
        return SearchSettings(model=self.model, gate=Gate.parse(metric, default_drop=self.max_drop),
                              objective=self.objective, budget_s=parse_duration(self.budget),
                              eval_tokens=self.eval_tokens, screen_tokens=self.screen_tokens,
                              bench_threads=tuple(self.threads) if isinstance(self.threads, list) else self.threads,
                              confirm=self.confirm, include=tuple(self.include),
                              exclude=tuple(self.exclude), skip_margin=None if self.run_all else 1.25,
                              recipe_file=recipe_file, replace_defaults=self.only_recipes, max_kl=self.max_kl,
                              workload=self.workload, prompt_lookup=self.prompt_lookup)

    @field_validator("workload")
    @classmethod
    def _workload(cls, value: str) -> str:
        from slipstream.benchmark.workloads import check_workload

        try:
            return check_workload(value)
        except Exception as exc:  # noqa: BLE001 (pydantic reports it against the field)
            raise ValueError(str(exc)) from None


SPECS: dict[str, type[_Spec]] = {"import": ImportSpec, "optimize": OptimizeSpec, "evaluate": EvaluateSpec,
                                 "bench": BenchSpec, "search": SearchSpec}


def check_spec(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    if kind not in SPECS:
        raise InvalidConfig(f"unknown job kind {kind!r}; kinds: {', '.join(SPECS)}")
    try:
        parsed = SPECS[kind].model_validate(spec)
    except ValidationError as exc:
        raise InvalidConfig(f"invalid {kind} job: {describe(exc)}") from None
    if isinstance(parsed, OptimizeSpec) and parsed.steps is not None:
        if parsed.technique or parsed.optimizationType or parsed.name:
            raise InvalidConfig("an optimization takes steps, or a technique (or GALE's pair), not both; a "
                                "recipe names its variants itself")
        parsed.recipe()
    elif isinstance(parsed, OptimizeSpec):
        parsed.technique_and_options()  # a GALE pair that maps to nothing is refused now, not in a worker
    if isinstance(parsed, SearchSpec):
        parsed.settings()  # a gate, objective or budget that does not parse is refused now
    if isinstance(parsed, ImportSpec) and parsed.name is not None:
        from slipstream.store import check_name

        check_name(parsed.name)
    return parsed.model_dump(exclude_none=True)


def models_used(kind: str, spec: dict[str, Any]) -> set[str]:
    return {spec["model"]} if "model" in spec else set()


class Runner:
    """Starts workers for queued jobs, at most ``max_workers`` at once; watches them end."""

    def __init__(self, store: Store, max_workers: int = 1, poll_s: float = 0.5):
        self.store, self.max_workers, self.poll_s = store, max_workers, poll_s
        self.registry = store.registry
        self.procs: dict[str, subprocess.Popen] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.worker_id = f"{os.uname().nodename}:{os.getpid()}"

    # lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="slipstream-jobs", daemon=True)
        self._thread.start()

    def stop(self, cancel_running: bool = False) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        # workers run in sessions of their own and record their own ends: a service that stops leaves them
        # to finish (the next one sees them alive) unless asked to cancel them
        if cancel_running:
            for job_id in list(self.procs):
                self.cancel(job_id)

    def recover(self) -> list[str]:
        """Jobs a dead service left running: queued again if resumable, else failed with the reason."""
        touched = []
        for job in self.registry.jobs(state="running"):
            if job.pid and pid_alive(job.pid) and job.id not in self.procs:
                continue  # another service's worker, still at work
            if job.kind in RESUMABLE and (job.attempts or 0) < MAX_ATTEMPTS:
                self.registry.update_job(job.id, state="queued", pid=None)
                self.registry.add_job_event(job.id, {"type": "requeued", "reason": "the service stopped while "
                                                     "it ran; it resumes"})
            else:
                self.registry.update_job(job.id, state="failed", error="the service stopped while this job ran; "
                                         f"{job.kind} jobs do not resume: start it again")
            touched.append(job.id)
        return touched

    # jobs ---------------------------------------------------------------------------------------
    def submit(self, kind: str, spec: dict[str, Any]) -> Any:
        job = self.registry.add_job(kind, check_spec(kind, spec))
        self.registry.add_job_event(job.id, {"type": "state", "state": "queued"})
        return job

    def cancel(self, job_id: str) -> Any:
        job = self.registry.get_job(job_id)
        if job is None or job.state in ("succeeded", "failed", "cancelled"):
            return job
        proc = self.procs.get(job_id)
        job = self.registry.update_job(job_id, state="cancelled", error="cancelled by a user")
        self.registry.add_job_event(job_id, {"type": "state", "state": "cancelled"})
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # the worker and whatever it started
            except ProcessLookupError:
                pass
        return job

    def using(self, model: str) -> list[str]:
        return [j.id for j in self.registry.jobs() if j.state in ("queued", "running")
                and model in models_used(j.kind, j.spec)]

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self._reap()
                while len(self.procs) < self.max_workers:
                    job = self.registry.claim_job(self.worker_id)
                    if job is None:
                        break
                    self._start(job)
            except Exception:  # noqa: BLE001 - the loop must outlive one bad row
                log.exception("job loop")

    def _start(self, job: Any) -> None:
        logs = self.store.home / "jobs"
        logs.mkdir(exist_ok=True)
        out = open(logs / f"{job.id}.log", "ab")
        env = {**os.environ, "SLIPSTREAM_HOME": str(self.store.home)}
        proc = subprocess.Popen([sys.executable, "-m", "slipstream.platform.worker", job.id], stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        out.close()
        self.procs[job.id] = proc
        self.registry.update_job(job.id, pid=proc.pid, attempts=(job.attempts or 0) + 1)
        self.registry.add_job_event(job.id, {"type": "state", "state": "running"})

    def _reap(self) -> None:
        for job_id, proc in list(self.procs.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.procs[job_id]
            job = self.registry.get_job(job_id)
            if job is not None and job.state == "running":  # the worker died without saying why
                self.registry.update_job(job_id, state="failed", error=f"the worker exited with code {code}; "
                                         "see the job's log")
                self.registry.add_job_event(job_id, {"type": "state", "state": "failed"})


JobSpec = Union[ImportSpec, OptimizeSpec, EvaluateSpec, BenchSpec, SearchSpec]
