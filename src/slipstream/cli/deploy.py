"""``slipstream deploy``: several models behind one OpenAI endpoint, in replicas on Ray Serve.

    slipstream deploy SPEC                 start Ray here, apply SPEC, serve until Ctrl-C or `deploy stop`
    slipstream deploy SPEC --address auto  apply SPEC to a running cluster (a rolling update) and return
    slipstream deploy SPEC --check         validate SPEC against the store, print it resolved, start nothing
    slipstream deploy status               each model's variant and replicas
    slipstream deploy scale MODEL N        run N replicas of MODEL (autoscaling off for it)
    slipstream deploy stop                 delete the deployment
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from slipstream.errors import InvalidConfig

if TYPE_CHECKING:
    from slipstream.store import Store

ACTIONS = ("status", "scale", "stop")
# SIGHUP asks a foreground deploy to apply its spec again; set from the start, so that one arriving while
# Ray is still starting is kept for later instead of ending the process (SIGHUP's default action)
_RELOAD = threading.Event()


def deploy_cmd(
    target: str = typer.Argument(..., help="A spec file (YAML or JSON: slipstream's keys or GALE's deploy body), "
                                 "or one of: status, scale MODEL N, stop"),
    args: Optional[List[str]] = typer.Argument(None, help="For scale: MODEL N"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to use ('auto': the one "
                                          "running here); default for SPEC: start one in this process; "
                                          "for status/scale/stop: auto"),
    num_cpus: Optional[float] = typer.Option(None, "--num-cpus", help="CPUs of the Ray instance started here"),
    check: bool = typer.Option(False, "--check", help="Validate SPEC against the store and print it; start nothing"),
    as_json: bool = typer.Option(False, "--json", help="status: print JSON"),
    allow_unauthenticated: bool = typer.Option(False, "--allow-unauthenticated",
                                               help="Listen beyond loopback with no API key (a private network, "
                                                    "or a proxy in front that authenticates)"),
) -> None:
    """Run a deployment spec on Ray Serve: one endpoint, each model in its own replicas, autoscaled."""
    if target in ACTIONS:
        _action(target, list(args or []), address or "auto", as_json)
        return
    if args:
        raise InvalidConfig(f"unexpected arguments after the spec: {' '.join(args)}")
    from slipstream.deploy.plan import plan_spec
    from slipstream.deploy.spec import DeploySpec
    from slipstream.store import Store

    from slipstream.serving.auth import check_exposure

    spec = DeploySpec.load(Path(target))
    check_exposure(spec.host, spec.api_keys, allow_unauthenticated)  # before anything starts
    store = Store()
    plans = plan_spec(spec, store)
    if check:
        shown = spec.model_dump(mode="json")
        shown["api_keys"] = f"{len(spec.api_keys)} configured" if spec.api_keys else "none (no authentication)"
        typer.echo(json.dumps({"spec": shown,
                               "replicas": [{"model": p.name, "variant": p.variant, "engine": p.engine,
                                             "version": p.version()} for p in plans]}, indent=2))
        return
    from slipstream.deploy import ray_app
    from slipstream.extras import require

    require("ray.serve", "ray", "slipstream deploy")
    if address is None:
        signal.signal(signal.SIGHUP, lambda *_: _RELOAD.set())
    started_here = ray_app.connect(address, num_cpus)
    ray_app.deploy(spec, store)
    url = f"http://{spec.host}:{spec.port}"
    typer.echo(f"slipstream deploy: {len(spec.models)} model(s) behind {url}/v1")
    for m, p in zip(spec.models, plans):
        s = m.scaling
        replicas = f"{s.min_replicas}-{s.max_replicas} (autoscaling)" if s.autoscaling else str(s.min_replicas)
        typer.echo(f"  {m.name:<20} {p.variant} on {p.engine}, replicas {replicas}, "
                   f"{s.cpus_per_replica:g} CPU x {m.threads or s.threads()} thread(s) each")
    typer.echo(f"  endpoints  {url}/v1/completions {url}/v1/chat/completions {url}/v1/models {url}/metrics")
    if not started_here:
        return
    typer.echo("  serving until Ctrl-C or `slipstream deploy stop`; SIGHUP applies SPEC again (a rolling update)")
    _serve_until_stopped(Path(target), store)


def _serve_until_stopped(spec_path: Path, store: "Store") -> None:
    from ray import serve

    from slipstream.deploy.ray_app import ENDPOINT_APP

    done, reload = threading.Event(), _RELOAD
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    signal.signal(signal.SIGHUP, lambda *_: reload.set())
    while not done.wait(1.0):
        if reload.is_set():
            reload.clear()
            _apply_again(spec_path, store)
        try:
            if ENDPOINT_APP not in serve.status().applications:
                typer.echo("slipstream deploy: the deployment was stopped")
                time.sleep(2)  # let `deploy stop` see its last delete confirmed before Serve goes
                break
        except Exception:  # noqa: BLE001 - Ray itself went away
            break
    typer.echo("slipstream deploy: shutting down")
    try:
        serve.shutdown()
    finally:
        import ray

        ray.shutdown()


def _apply_again(spec_path: Path, store: "Store") -> None:
    """SIGHUP: the spec file as it is now, applied to the running deployment; a bad file leaves it as it was."""
    from slipstream.deploy import ray_app
    from slipstream.deploy.plan import plan_spec
    from slipstream.deploy.spec import DeploySpec

    try:
        spec = DeploySpec.load(spec_path)
        plan_spec(spec, store)
        ray_app.deploy(spec, store)
    except Exception as exc:  # noqa: BLE001 - the deployment keeps serving what it served
        typer.echo(f"slipstream deploy: {spec_path} not applied: {exc}")
        return
    typer.echo(f"slipstream deploy: applied {spec_path} again ({', '.join(m.name for m in spec.models)})")


def _action(action: str, args: list[str], address: str, as_json: bool) -> None:
    from slipstream.deploy import ray_app

    try:
        ray_app.connect(address)
    except ConnectionError as exc:
        raise InvalidConfig(f"no Ray cluster at {address!r} ({exc}); is `slipstream deploy SPEC` running?") from None
    if action == "status":
        st = ray_app.status()
        if as_json:
            typer.echo(json.dumps(st, indent=2))
            return
        ep = st["endpoint"]
        typer.echo(f"endpoint  {ep['url']} ({ep['status']})" if ep else "endpoint  not running")
        for m in st["models"]:
            states = ", ".join(f"{k.lower()} {v}" for k, v in sorted(m["replicas"].items())) or "none"
            typer.echo(f"  {m['name']:<20} {m['variant']:<28} {m['status']:<10} replicas: {states} "
                       f"(min {m['min_replicas']}, max {m['max_replicas']}) {m['message']}")
    elif action == "scale":
        if len(args) != 2 or not args[1].isdigit():
            raise InvalidConfig("usage: slipstream deploy scale MODEL N")
        ray_app.scale(args[0], int(args[1]))
        typer.echo(f"slipstream deploy: {args[0]} now runs {args[1]} replica(s)")
    else:
        names = ray_app.stop()
        typer.echo(f"slipstream deploy: stopped {len(names)} application(s)" if names
                   else "slipstream deploy: nothing to stop")
