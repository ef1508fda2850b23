"""Deployments: a deployment spec (slipstream's or GALE's body) run as a supervised process, its state kept in
the registry.

Two runtimes, the two ways slipstream serves:

- ``process``: one ``slipstream serve`` of the spec's single model (one replica; the spec's ``scaling`` is
  kept but not applied, and the deployment says so);
- ``ray``: ``slipstream deploy SPEC``, which starts a local Ray instance and runs every model in replicas
  autoscaled by Ray Serve. An update rewrites the spec file and sends the process SIGHUP: Ray Serve then
  replaces replicas one by one (a rolling update, no failed request).

The platform picks a free port when the spec leaves it at 0, and watches each process: ``deploying`` until its
/health answers, then ``ready``; an unexpected exit is restarted (at most :data:`MAX_RESTARTS` times, then
``failed`` with the log's last line); a delete is ``stopping`` until the process has gone, then ``stopped``.
Processes run in sessions of their own, so a platform that restarts finds them still serving and watches
them again; one that died meanwhile is started again.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import httpx

from slipstream.deploy.spec import DeploySpec
from slipstream.errors import InvalidConfig
from slipstream.lifetime import pid_alive
from slipstream.store import Store

log = logging.getLogger("slipstream.platform")

RUNTIMES = ("process", "ray")
ACTIVE = ("deploying", "ready", "stopping")
MAX_RESTARTS = 3
DEPLOY_TIMEOUT_S = {"process": 300.0, "ray": 600.0}
STOP_TIMEOUT_S = 60.0


def free_port(host: str) -> int:
    from slipstream.serving.server import bind

    sock = bind(host, 0)
    try:
        return sock.getsockname()[1]
    finally:
        sock.close()


def check_spec(body: dict[str, Any], runtime: str, store: Store) -> DeploySpec:
    """The spec, validated against the store (variants exist, optimizationInfo matches) and the runtime."""
    from slipstream.deploy.plan import plan_spec
    from slipstream.serving.auth import check_exposure

    if runtime not in RUNTIMES:
        raise InvalidConfig(f"runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
    spec = DeploySpec.parse(body)
    if runtime == "process" and len(spec.models) != 1:
        raise InvalidConfig(f"runtime process serves one model and the spec has {len(spec.models)}: "
                            "use runtime ray for several models behind one endpoint")
    check_exposure(spec.host, spec.api_keys, allow_unauthenticated=False)
    plan_spec(spec, store)
    return spec


def shown_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as the API shows it: keys are never given back."""
    keys = spec.get("api_keys") or []
    return {**spec, "api_keys": f"{len(keys)} configured" if keys else "none"}


def serve_settings(spec: DeploySpec) -> dict[str, Any]:
    """``slipstream serve``'s settings file for the spec's one model."""
    m = spec.models[0]
    data = m.model_dump(mode="json", include=set(type(m).model_fields) - {"name", "variant", "engine_name", "device",
                                                                          "scaling", "optimization"})
    data["threads"] = m.threads  # one process: the engine's threads are the machine's unless the spec says
    return {**data, "host": spec.host, "port": spec.port, "served_model_name": m.name, "api_keys": spec.api_keys,
            "grace_period_s": spec.grace_period_s, "max_body_bytes": spec.max_body_bytes}


def parse_figures(text: str) -> dict[str, Any]:
    """A deployment's /metrics page (Prometheus text, a Ray endpoint's merged over replicas) as totals."""
    from prometheus_client.parser import text_string_to_metric_families

    sums: dict[str, float] = {}
    replicas: set[str] = set()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            sums[s.name] = sums.get(s.name, 0.0) + float(s.value)
            if "replica" in s.labels:
                replicas.add(s.labels["replica"])

    def ratio(name: str) -> Optional[float]:
        count = sums.get(f"{name}_count")
        return sums.get(f"{name}_sum", 0.0) / count if count else None

    return {"requests": sums.get("slipstream_requests_total", 0.0),
            "output_tokens": sums.get("slipstream_output_tokens_total", 0.0),
            "prompt_tokens": sums.get("slipstream_prompt_tokens_total", 0.0),
            "rejected": sums.get("slipstream_requests_rejected_total", 0.0),
            "mean_ttft_s": ratio("slipstream_time_to_first_token_seconds"),
            "mean_request_s": ratio("slipstream_request_duration_seconds"),
            "replicas": len(replicas) or None}


class Deployer:
    """Starts, watches, updates and stops the platform's deployments."""

    def __init__(self, store: Store, default_runtime: str = "process", poll_s: float = 0.5):
        self.store, self.registry, self.default_runtime, self.poll_s = store, store.registry, default_runtime, poll_s
        self.home = store.home / "deployments"
        self.procs: dict[str, subprocess.Popen] = {}
        self.restarts: dict[str, int] = {}
        self.since: dict[str, float] = {}  # when each deployment last started deploying (monotonic)
        self.last_figures: dict[str, tuple[float, float]] = {}  # id -> (monotonic time, output tokens)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="slipstream-deployments", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """The watcher stops; the deployments keep serving (a later platform watches them again)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def recover(self) -> None:
        for d in self.registry.deployments():
            if d.state not in ACTIVE:
                continue
            self.since[d.id] = time.monotonic()
            if d.pid and pid_alive(d.pid):
                continue  # still serving (or still stopping): the loop watches it by its pid
            if d.state == "stopping":
                self.registry.update_deployment(d.id, state="stopped", pid=None)
            else:
                self._launch(d.id, d.runtime, d.spec, note="started again: its process had gone while the "
                                                           "platform was down")

    # actions ------------------------------------------------------------------------------------
    def create(self, body: dict[str, Any], runtime: str | None = None, name: str | None = None) -> Any:
        runtime = runtime or self.default_runtime
        spec = check_spec(body, runtime, self.store)
        data = spec.model_dump(mode="json")
        if not data["port"]:
            data["port"] = free_port(spec.host)
        row = self.registry.add_deployment(name or spec.models[0].name, runtime, data)
        return self._launch(row.id, runtime, data)

    def update(self, dep_id: str, body: dict[str, Any]) -> Any:
        """A new spec for the deployment; without ``api_keys`` it keeps the keys it has."""
        with self._lock:
            row = self.registry.get_deployment(dep_id)
            if "api_keys" not in body and "apiKeys" not in body and row.spec.get("api_keys"):
                # keys are never shown, so a spec sent back without them keeps the deployment's own
                from slipstream.deploy.gale import is_gale

                body = {**body, ("apiKeys" if is_gale(body) else "api_keys"): row.spec["api_keys"]}
            spec = check_spec(body, row.runtime, self.store)
            data = spec.model_dump(mode="json")
            if not data["port"] or row.runtime == "ray":  # Ray Serve's HTTP port is fixed for its instance
                data["port"] = row.spec["port"]
            proc = self.procs.get(dep_id)
            if row.runtime == "ray" and row.state == "ready" and row.pid and pid_alive(row.pid):
                self._spec_file(dep_id).write_text(json.dumps(data))
                os.kill(row.pid, signal.SIGHUP)  # `slipstream deploy` applies the file again: a rolling update
                return self.registry.update_deployment(dep_id, spec=data, error=None)
            # one process serves it: stop it, then start the new spec on the same port
            self._terminate(row.pid, proc)
            self._wait_gone(row.pid, proc)
            return self._launch(dep_id, row.runtime, data)

    def delete(self, dep_id: str) -> Any:
        with self._lock:
            row = self.registry.get_deployment(dep_id)
            if row.state in ("stopped", "failed") and not (row.pid and pid_alive(row.pid)):
                return self.registry.update_deployment(dep_id, state="stopped", pid=None)
            row = self.registry.update_deployment(dep_id, state="stopping")
            self._terminate(row.pid, self.procs.get(dep_id))
            self.since[dep_id] = time.monotonic()
            return row

    def using(self, variant: str) -> list[str]:
        return [d.id for d in self.registry.deployments() if d.state in ACTIVE
                and any(m.get("variant") == variant for m in d.spec.get("models", []))]

    # talking to a deployment --------------------------------------------------------------------
    def headers(self, row: Any) -> dict[str, str]:
        keys = row.spec.get("api_keys") or []
        return {"Authorization": f"Bearer {keys[0]}"} if keys else {}

    def base_url(self, row: Any) -> str:
        host = row.spec["host"]
        host = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
        return f"http://{host}:{row.spec['port']}"

    async def figures(self, row: Any) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.get(self.base_url(row) + "/metrics", headers=self.headers(row))
        r.raise_for_status()
        figures = parse_figures(r.text)
        now = time.monotonic()
        previous = self.last_figures.get(row.id)
        self.last_figures[row.id] = (now, figures["output_tokens"])
        rate = None
        if previous and now > previous[0] and figures["output_tokens"] >= previous[1]:
            rate = (figures["output_tokens"] - previous[1]) / (now - previous[0])
        return {**figures, "tokens_per_s": rate}

    # watching -----------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                for d in self.registry.deployments():
                    if d.state in ACTIVE:
                        with self._lock:
                            self._watch(self.registry.get_deployment(d.id))
            except Exception:  # noqa: BLE001 - the loop must outlive one bad row
                log.exception("deployment loop")

    def _alive(self, row: Any) -> tuple[bool, int | None]:
        proc = self.procs.get(row.id)
        if proc is not None and proc.pid == row.pid:
            code = proc.poll()
            return code is None, code
        return bool(row.pid and pid_alive(row.pid)), None

    def _watch(self, row: Any) -> None:
        if row is None or row.state not in ACTIVE:
            return
        alive, code = self._alive(row)
        waited = time.monotonic() - self.since.get(row.id, time.monotonic())
        if row.state == "stopping":
            if not alive:
                self.procs.pop(row.id, None)
                self.registry.update_deployment(row.id, state="stopped", pid=None)
            elif waited > STOP_TIMEOUT_S:
                self._kill(row.pid)
            return
        if not alive:
            self.procs.pop(row.id, None)
            why = f"its process exited (code {code}): {self._last_line(row.id)}"
            if self.restarts.get(row.id, 0) < MAX_RESTARTS:
                self.restarts[row.id] = self.restarts.get(row.id, 0) + 1
                self._launch(row.id, row.runtime, row.spec, note=f"restarted: {why}")
            else:
                self.registry.update_deployment(row.id, state="failed", pid=None, error=why)
            return
        if self._healthy(row):
            if row.state != "ready":
                self.registry.update_deployment(row.id, state="ready", url=self.base_url(row) + "/v1")
        elif row.state == "deploying" and waited > DEPLOY_TIMEOUT_S[row.runtime]:
            self._kill(row.pid)
            self.procs.pop(row.id, None)
            self.registry.update_deployment(row.id, state="failed", pid=None, error=(
                f"not ready after {waited:.0f} s: {self._last_line(row.id)}"))
        elif row.state == "ready":
            self.registry.update_deployment(row.id, state="deploying", error="its /health stopped answering")

    def _healthy(self, row: Any) -> bool:
        try:
            return httpx.get(self.base_url(row) + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    # processes ----------------------------------------------------------------------------------
    def _spec_file(self, dep_id: str) -> Path:
        return self.home / f"{dep_id}.json"

    def log_path(self, dep_id: str) -> Path:
        return self.home / f"{dep_id}.log"

    def _last_line(self, dep_id: str) -> str:
        path = self.log_path(dep_id)
        lines = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
        return lines[-1][:300] if lines else "no output"

    def _command(self, runtime: str, spec: dict[str, Any], spec_file: Path) -> list[str]:
        cli = [sys.executable, "-m", "slipstream.cli.main"]
        if runtime == "ray":
            spec_file.write_text(json.dumps(spec))
            return [*cli, "deploy", str(spec_file)]
        parsed = DeploySpec.model_validate(spec)
        m = parsed.models[0]
        spec_file.write_text(json.dumps(serve_settings(parsed)))
        cmd = [*cli, "serve", m.variant, "--config", str(spec_file)]
        if m.engine_name:
            cmd += ["--engine", m.engine_name]
        if m.device:
            cmd += ["--device", m.device]
        return cmd

    def _launch(self, dep_id: str, runtime: str, spec: dict[str, Any], note: str | None = None) -> Any:
        self.home.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path(dep_id), "ab")
        env = {**os.environ, "SLIPSTREAM_HOME": str(self.store.home)}
        proc = subprocess.Popen(self._command(runtime, spec, self._spec_file(dep_id)), stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        out.close()
        self.procs[dep_id] = proc
        self.since[dep_id] = time.monotonic()
        self.last_figures.pop(dep_id, None)
        return self.registry.update_deployment(dep_id, runtime=runtime, spec=spec, state="deploying", pid=proc.pid,
                                               url=None, error=note)

    @staticmethod
    def _terminate(pid: int | None, proc: subprocess.Popen | None) -> None:
        if pid:
            try:
                # the process itself, not its group: serve finishes its requests, deploy shuts Ray Serve and
                # the Ray instance it started down in order (a group-wide signal would hit Ray's own processes)
                os.kill(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass

    @staticmethod
    def _kill(pid: int | None) -> None:
        if pid:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _wait_gone(self, pid: int | None, proc: subprocess.Popen | None) -> None:
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while pid and time.monotonic() < deadline:
            if proc is not None and proc.pid == pid:
                if proc.poll() is not None:
                    return
            elif not pid_alive(pid):
                return
            time.sleep(0.1)
        self._kill(pid)
