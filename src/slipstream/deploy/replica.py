"""One replica of one model: an engine, its scheduler and ``slipstream serve``'s own app, run in process.

Ray Serve runs this class as a deployment (:mod:`slipstream.deploy.ray_app` wraps it); the endpoint calls
:meth:`ModelReplica.http` with each request for this model and streams back what the app answers, so the
routes, validation, caches and per-model metrics are exactly those of ``slipstream serve``. Every second the
replica sends its Prometheus metrics to the endpoint's metrics keeper, labelled with its replica id.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, AsyncIterator, Callable

from slipstream.deploy.asgi import Forwarded, Start, stream
from slipstream.deploy.plan import ReplicaPlan

log = logging.getLogger("slipstream.deploy")

PUSH_INTERVAL_S = 1.0


class ModelReplica:
    def __init__(self, plan: dict[str, Any], push: Callable[[str, str, str, bytes], Any] | None = None):
        from slipstream.engines.loading import open_engine
        from slipstream.serving.app import create_app
        from slipstream.serving.settings import DeploymentSettings
        from slipstream.store import Store

        self.plan = ReplicaPlan(**plan)
        settings = DeploymentSettings.model_validate({**self.plan.settings, "served_model_name": self.plan.name})
        store = Store(self.plan.store_home)
        self.engine = open_engine(self.plan.variant, engine=self.plan.engine, device=self.plan.device,
                                  threads=settings.threads, store=store, options=self.plan.options)
        from slipstream.serving.adapters import AdapterCatalog

        self.app = create_app(self.engine, settings, model_name=self.plan.name,
                              adapters=AdapterCatalog(store, self.plan.variant))
        self.state = self.app.state.slipstream
        self.state.scheduler.start()  # the app's lifespan is not run in process: start what it would
        self.replica_id = _replica_id()
        self.started = time.time()
        self._stop = threading.Event()
        self._push = push
        if push is not None:
            threading.Thread(target=self._push_metrics, name="slipstream-metrics-push", daemon=True).start()
        log.info("replica %s of %s: %s on %s ready", self.replica_id, self.plan.name, self.plan.variant,
                 self.plan.engine)

    async def http(self, request: Forwarded) -> AsyncIterator[tuple[Start, bytes] | bytes]:
        """The response: its start together with the first piece of its body (one item less to send back
        before the client sees anything), then the rest of the body as the app sends it."""
        start: Start | None = None
        async for part in stream(self.app, request):
            if isinstance(part, Start):
                start = part
            elif start is not None:
                yield start, part
                start = None
            else:
                yield part
        if start is not None:
            yield start, b""

    def card(self) -> dict[str, Any]:
        return {"id": self.plan.name, "root": self.plan.variant, "max_model_len": self.engine.max_context,
                "engine": self.plan.engine, "replica": self.replica_id}

    def check_health(self) -> None:
        """Ray Serve calls this periodically; raising makes it replace the replica."""
        if not self.state.scheduler.alive:
            raise RuntimeError(f"the scheduler of {self.plan.name} has stopped")

    def _push_metrics(self) -> None:
        while not self._stop.wait(PUSH_INTERVAL_S):
            try:
                self._push(self.plan.name, self.replica_id, self.plan.variant, self.state.metrics.render())
            except Exception:  # noqa: BLE001 - metrics are best effort; the next push retries
                log.debug("metrics push failed", exc_info=True)

    def close(self) -> None:
        self._stop.set()
        self.state.scheduler.stop()
        self.engine.close()

    def __del__(self) -> None:  # Ray Serve calls it when the replica is shut down
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


def _replica_id() -> str:
    try:
        from ray import serve

        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # noqa: BLE001 - outside Ray Serve (tests of the class itself)
        import os

        return f"pid{os.getpid()}"
