"""Ray Serve's own latency on this machine, with no model: the floor under `slipstream deploy`'s proxy cost.

A no-op FastAPI route measured four ways, requests one at a time, median of ``--requests``:
  - uvicorn:       the route in a plain uvicorn server (what `slipstream serve` is),
  - serve-direct:  the route in a Ray Serve ingress replica (client -> Ray's proxy -> replica),
  - serve-hop:     that replica awaiting one unary call on a second deployment (the endpoint -> a model),
  - serve-stream:  that replica relaying a 3-item streamed call from the second deployment, which is the
                   path every streamed token takes through `slipstream deploy`.
``serve-stream`` minus ``uvicorn`` is what Ray Serve adds to a streamed request before slipstream's own code.

Usage (writes benchmarks/results/<machine>/ray_floor.json):
    .venv/bin/python benchmarks/serving/ray_floor.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import result_path, write_json  # noqa: E402


def build_apps():
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse
    from ray import serve

    @serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=16)
    class Model:
        async def gen(self, n: int):
            for _ in range(n):
                yield b"data: x\n\n"

        def one(self) -> bytes:
            return b"x"

    api = FastAPI()

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    @serve.ingress(api)
    class Endpoint:
        def __init__(self, model):
            self.model = model

        @api.get("/direct")
        async def direct(self):
            return {"ok": 1}

        @api.get("/hop")
        async def hop(self):
            return {"ok": (await self.model.one.remote()).decode()}

        @api.get("/stream")
        async def stream(self):
            gen = self.model.options(stream=True).gen.remote(3)

            async def body():
                async for x in gen:
                    yield x

            return StreamingResponse(body(), media_type="text/event-stream")

    return Endpoint.bind(Model.bind())


def plain_server(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/direct")
    async def direct():
        return {"ok": 1}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def median_ms(url: str, n: int) -> float:
    with httpx.Client() as c:
        for _ in range(10):
            c.get(url)
        times = []
        for _ in range(n):
            t = time.perf_counter()
            c.get(url)
            times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1000, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--out", type=Path, default=result_path("ray_floor.json"))
    args = ap.parse_args()

    import ray
    from ray import serve

    from slipstream.machine import describe_machine

    threading.Thread(target=plain_server, args=(18711,), daemon=True).start()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": 18712})
    serve.run(build_apps(), name="floor", route_prefix="/")
    record = {"command": " ".join(sys.argv), "machine": describe_machine(), "requests": args.requests,
              "median_ms": {}}
    for label, url in (("uvicorn", "http://127.0.0.1:18711/direct"), ("serve-direct", "http://127.0.0.1:18712/direct"),
                       ("serve-hop", "http://127.0.0.1:18712/hop"), ("serve-stream", "http://127.0.0.1:18712/stream")):
        record["median_ms"][label] = median_ms(url, args.requests)
        print(f"{label:13s} {record['median_ms'][label]:7.2f} ms", flush=True)
    m = record["median_ms"]
    record["ray_adds_to_a_streamed_request_ms"] = round(m["serve-stream"] - m["uvicorn"], 2)
    serve.shutdown()
    ray.shutdown()
    write_json(args.out, record)
    print(f"Ray Serve adds {record['ray_adds_to_a_streamed_request_ms']} ms to a streamed request here")


if __name__ == "__main__":
    main()
