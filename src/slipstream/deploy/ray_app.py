"""A spec as Ray Serve applications: one per model (its replicas), and the endpoint in front of them all.

Each model is its own Serve application, so applying a spec in which one model points at another variant
rolls only that model's replicas (Ray Serve starts the new ones, then lets the old ones finish what they
hold, up to ``grace_period_s``), and changing only its scaling adds or removes replicas without restarting
the rest. The endpoint application (:data:`ENDPOINT_APP`) holds the router and the keeper of metrics and
of the spec in force, which ``slipstream deploy status|scale|stop`` read from another process.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict
from typing import Any

from slipstream.deploy.plan import ReplicaPlan, plan_spec
from slipstream.deploy.spec import DeploySpec, ModelSpec, Scaling
from slipstream.errors import InvalidConfig
from slipstream.store import Store

ENDPOINT_APP = "slipstream"
MODEL_APP_PREFIX = "slipstream-model-"
KEEPER = "SlipstreamKeeper"


def app_name(model: str) -> str:
    """A Serve application name for a served model name (which may hold any characters)."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", model).strip("-")[:40] or "model"
    return f"{MODEL_APP_PREFIX}{slug}-{hashlib.sha1(model.encode()).hexdigest()[:6]}"


def _versioned(deployment: Any, version: str) -> Any:
    """Pin the deployment's version to what its replicas load. Ray Serve's Python API otherwise gives every
    ``serve.run`` a new random version and replaces every replica, even when only the scaling changed."""
    return deployment.options(version=version, _internal=True)


def deployment_options(scaling: Scaling, max_batch_size: int, grace_period_s: float) -> dict[str, Any]:
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": scaling.cpus_per_replica},
        "max_ongoing_requests": scaling.max_ongoing_requests or max_batch_size,
        "max_queued_requests": scaling.max_queued_requests,
        "graceful_shutdown_timeout_s": grace_period_s,
        "graceful_shutdown_wait_loop_s": 0.5,
        "health_check_period_s": 5.0,
        "health_check_timeout_s": 30.0,
    }
    if scaling.autoscaling:
        options["autoscaling_config"] = {
            "min_replicas": scaling.min_replicas, "max_replicas": scaling.max_replicas,
            "initial_replicas": scaling.initial_replicas if scaling.initial_replicas is not None
            else scaling.min_replicas,
            "target_ongoing_requests": scaling.target_ongoing_requests,
            "upscale_delay_s": scaling.upscale_delay_s, "downscale_delay_s": scaling.downscale_delay_s,
            "metrics_interval_s": scaling.metrics_interval_s, "look_back_period_s": scaling.look_back_period_s,
        }
    else:
        options["num_replicas"] = scaling.min_replicas
    return options


def model_app(plan: ReplicaPlan, model: ModelSpec, grace_period_s: float) -> Any:
    from ray import serve

    from slipstream.deploy.replica import ModelReplica

    deployment = serve.deployment(ModelReplica, name="model",
                                  **deployment_options(model.scaling, model.max_batch_size, grace_period_s))
    return _versioned(deployment, plan.version()).bind(asdict(plan), PushToKeeper())


class PushToKeeper:
    """How a replica sends its metrics page to the keeper (the handle is made once the endpoint exists)."""

    def __init__(self) -> None:
        self.handle: Any = None

    def __call__(self, model: str, replica: str, variant: str, page: bytes) -> None:
        from ray import serve

        if self.handle is None:
            self.handle = serve.get_deployment_handle(KEEPER, app_name=ENDPOINT_APP)
        self.handle.put.remote(model, replica, variant, page)


class Keeper:
    """The endpoint's memory: every replica's latest metrics, and the spec in force."""

    def __init__(self) -> None:
        from slipstream.deploy.metrics import MetricsKeeper

        self.metrics = MetricsKeeper()
        self.spec: str | None = None

    def put(self, model: str, replica: str, variant: str, page: bytes) -> None:
        self.metrics.put(model, replica, variant, page)

    def render(self) -> bytes:
        return self.metrics.render()

    def replicas(self) -> dict[str, list[dict[str, str]]]:
        return self.metrics.replicas()

    def set_spec(self, spec: str) -> None:
        self.spec = spec

    def get_spec(self) -> str | None:
        return self.spec


def endpoint_app(spec: DeploySpec) -> Any:
    from ray import serve

    from slipstream.deploy.endpoint import build_endpoint, loosest

    models = {m.name: app_name(m.name) for m in spec.models}
    keeper = _versioned(serve.deployment(Keeper, name=KEEPER, num_replicas=1,
                                         ray_actor_options={"num_cpus": 0}), "1").bind()
    version = hashlib.sha256(json.dumps([models, spec.api_keys, spec.max_body_bytes,
                                         [m.limits.model_dump() for m in spec.models],
                                         sorted((a.name, m.name) for m in spec.models for a in m.adapters)],
                                        sort_keys=True).encode()).hexdigest()[:16]

    # the endpoint only relays, so it takes many requests at once; its queue is bounded too (Ray's proxy
    # answers 503 beyond it)
    adapters = {a.name: m.name for m in spec.models for a in m.adapters}
    endpoint = build_endpoint(models, spec.api_keys, spec.max_body_bytes, loosest([m.limits for m in spec.models]),
                              adapters=adapters)
    ingress = serve.deployment(endpoint, name="endpoint",
                               ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000,
                               max_queued_requests=1000)
    return _versioned(ingress, version).bind(keeper)


def connect(address: str | None = None, num_cpus: float | None = None) -> bool:
    """Join the Ray cluster at ``address`` ("auto": the one running here), or start one in this process.
    Returns True when this process started it (and so ends it when it exits)."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        ray.init(address=address, namespace="serve", log_to_driver=False)
        return False
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, namespace="serve")
    return True


def cpus_needed(spec: DeploySpec) -> tuple[float, float]:
    """Ray CPUs the spec reserves at its start and at its most (every model at max_replicas)."""
    start = sum(m.scaling.cpus_per_replica * (m.scaling.initial_replicas if m.scaling.initial_replicas is not None
                                              else m.scaling.min_replicas) for m in spec.models)
    most = sum(m.scaling.cpus_per_replica * m.scaling.max_replicas for m in spec.models)
    return start, most


def check_fits(spec: DeploySpec, cluster_cpus: float) -> None:
    """Refuse a spec whose first replicas cannot all be placed: Ray Serve would wait for them forever."""
    start, most = cpus_needed(spec)
    if start > cluster_cpus + 1e-9:
        raise InvalidConfig(f"the spec's first replicas reserve {start:g} Ray CPUs but the cluster has "
                            f"{cluster_cpus:g}; "
                            "lower scaling.cpus_per_replica or min_replicas (a reservation, not a limit: engine "
                            "threads are set by threads_per_replica), or start Ray with more CPUs (--num-cpus)")
    if most > cluster_cpus + 1e-9:
        import logging

        logging.getLogger("slipstream.deploy").warning(
            "at max_replicas the spec reserves %g Ray CPUs and the cluster has %g: replicas beyond that wait "
            "for room (or for the cluster's autoscaler)", most, cluster_cpus)


def deploy(spec: DeploySpec, store: Store | None = None, *, wait: bool = True) -> list[ReplicaPlan]:
    """Apply ``spec`` to the connected cluster: new models start, changed ones roll, removed ones stop."""
    import ray
    from ray import serve

    store = store or Store()
    plans = plan_spec(spec, store)  # every model checked before anything starts
    check_fits(spec, ray.cluster_resources().get("CPU", 0.0))
    serve.start(http_options={"host": spec.host, "port": spec.port})
    targets = [serve.RunTarget(model_app(p, m, spec.grace_period_s), name=app_name(m.name), route_prefix=None)
               for p, m in zip(plans, spec.models)]
    serve.run_many(targets, wait_for_applications_running=wait)
    serve.run(endpoint_app(spec), name=ENDPOINT_APP, route_prefix="/")
    keep = {app_name(m.name) for m in spec.models}
    for name in list(serve.status().applications):
        if name.startswith(MODEL_APP_PREFIX) and name not in keep:
            serve.delete(name)
    serve.get_deployment_handle(KEEPER, app_name=ENDPOINT_APP).set_spec.remote(spec.to_json()).result()
    return plans


def current_spec() -> DeploySpec:
    from ray import serve

    try:
        raw = serve.get_deployment_handle(KEEPER, app_name=ENDPOINT_APP).get_spec.remote().result(timeout_s=30)
    except Exception:  # noqa: BLE001
        raw = None
    if not raw:
        raise InvalidConfig("no slipstream deployment is running on this Ray cluster; start one with "
                            "`slipstream deploy SPEC`")
    return DeploySpec.parse(json.loads(raw))


def scale(model: str, replicas: int, store: Store | None = None) -> DeploySpec:
    """Fix ``model`` at ``replicas`` replicas (autoscaling off for it) without restarting the others."""
    if replicas < 1:
        raise InvalidConfig("a model needs at least 1 replica")
    spec = current_spec()
    m = spec.model(model)
    m.scaling = m.scaling.model_copy(update={"min_replicas": replicas, "max_replicas": replicas,
                                             "initial_replicas": None})
    deploy(spec, store)
    return spec


def stop() -> list[str]:
    from ray import serve

    apps = serve.status().applications
    # the endpoint goes last: `slipstream deploy SPEC` waits for it to go, then ends Ray
    names = sorted((n for n in apps if n == ENDPOINT_APP or n.startswith(MODEL_APP_PREFIX)),
                   key=lambda n: n == ENDPOINT_APP)
    for name in names:
        try:
            serve.delete(name)
        except Exception:  # noqa: BLE001
            # the endpoint went last: a `slipstream deploy SPEC` in the foreground saw it go and shut Serve
            # down while this delete was still confirming it
            if name != ENDPOINT_APP:
                raise
    return names


def status() -> dict[str, Any]:
    """Each model's variant, replicas by state, and target; the endpoint's URL."""
    from ray import serve

    st = serve.status()
    try:
        spec: DeploySpec | None = current_spec()
    except InvalidConfig:
        spec = None
    out: dict[str, Any] = {"endpoint": None, "models": []}
    endpoint = st.applications.get(ENDPOINT_APP)
    if spec is not None and endpoint is not None:
        out["endpoint"] = {"url": f"http://{spec.host}:{spec.port}", "status": str(endpoint.status.value)}
    for m in spec.models if spec else []:
        app = st.applications.get(app_name(m.name))
        dep = app.deployments.get("model") if app else None
        states = {str(k.value if hasattr(k, "value") else k): v for k, v in (dep.replica_states if dep else {}).items()}
        out["models"].append({
            "name": m.name, "variant": m.variant, "status": str(dep.status.value) if dep else "MISSING",
            "replicas": states, "running": states.get("RUNNING", 0),
            "min_replicas": m.scaling.min_replicas, "max_replicas": m.scaling.max_replicas,
            "message": dep.message if dep else "",
        })
    return out


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.5) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval_s)
    return False
