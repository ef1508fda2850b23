"""Ray Serve layouts against one `slipstream serve` process (issue 25), on one machine, side by side.

Three targets serve the same variant at once, so every ratio compares figures taken seconds apart:
  - serve-2t: `slipstream serve --threads 2` (one process, no Ray),
  - ray-1x2:  `slipstream deploy`, model "one": 1 replica x 2 engine threads (2 Ray CPUs),
  - ray-2x1:  the same deployment, model "two": 2 replicas x 1 engine thread (1 Ray CPU each),
both Ray models behind the deployment's one endpoint. Load: MT-bench first turns as chat, greedy,
``ignore_eos`` (every request makes exactly ``--max-tokens`` tokens), streamed, at 1, 16 and 64 concurrent
streams; levels interleaved across targets, the order alternating. Per level and target: output tokens/s,
p95 time per output token. The proxy's cost: ``--proxy-requests`` single-stream requests of 4 tokens,
alternating between serve-2t and ray-1x2 (same engine, same threads), median time to first token of each.
On paper: N machines of the best layout against a stated workload, priced with slipstream's cost model.

Idle targets still cost a little (Ray's own processes, idle scheduler threads); all three share that.

Usage (writes benchmarks/results/<machine>/ray_layouts.json and prints a markdown table):
    SLIPSTREAM_HOME=/tmp/demohome .venv/bin/python benchmarks/serving/ray_layouts.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from common import ensure_ct2_int8, result_path, write_json  # noqa: E402  (benchmarks/common.py)
from serving import Server, load_prompts, requests_per_level, run_level, slipstream_cmd  # noqa: E402


def deploy_spec(variant: str, port: int, batch: int) -> dict:
    common = {"variant": variant, "exact_cache": {"enabled": False}}
    return {"port": port, "models": [
        {**common, "name": "one", "max_batch_size": batch,
         "scaling": {"cpus_per_replica": 2, "threads_per_replica": 2, "max_queued_requests": 256}},
        {**common, "name": "two", "max_batch_size": batch // 2,
         "scaling": {"min_replicas": 2, "max_replicas": 2, "cpus_per_replica": 1, "threads_per_replica": 1,
                     "max_queued_requests": 256}},
    ]}


class Deployment:
    """`slipstream deploy SPEC` in the foreground, as a user starts it; stopped with `deploy stop`."""

    def __init__(self, spec: dict, log: Path, num_cpus: int):
        self.path = Path(tempfile.mkdtemp()) / "deploy.yaml"
        self.path.write_text(yaml.safe_dump(spec))
        self.url = f"http://127.0.0.1:{spec['port']}"
        self.log = open(log, "w")
        start = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "slipstream.cli.main", "deploy", str(self.path),
                                      "--num-cpus", str(num_cpus)], stdout=self.log, stderr=subprocess.STDOUT)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slipstream deploy exited with {self.proc.returncode}; see {log}")
            try:
                if len(httpx.get(self.url + "/v1/models", timeout=5).json()["data"]) == len(spec["models"]):
                    break
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            if time.monotonic() - start > 600:
                raise RuntimeError(f"deployment not ready after 600 s; see {log}")
            time.sleep(1)
        self.startup_s = time.monotonic() - start

    def stop(self) -> None:
        subprocess.run([sys.executable, "-m", "slipstream.cli.main", "deploy", "stop"], capture_output=True)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def proxy_cost(targets: dict[str, tuple[str, str]], prompts: list[str], n: int) -> dict:
    """Median TTFT at one stream, requests alternating between the targets (same prompts, 4 tokens)."""
    ttft: dict[str, list[float]] = {k: [] for k in targets}
    for i in range(n):
        for label, (url, model) in (list(targets.items()) if i % 2 == 0 else list(targets.items())[::-1]):
            r = asyncio.run(run_level(url, model, prompts[i % len(prompts):] + prompts, 1, 1, 4))
            ttft[label].append(r["ttft_s"]["p50"])
    return {k: {"median_ttft_ms": round(statistics.median(v) * 1000, 2), "n": len(v)} for k, v in ttft.items()}


def on_paper(best_tokens_per_s: float, layout: str, machines: list[int], requests_per_month: float,
             tokens_per_request: float, instance: str) -> dict:
    from slipstream.benchmark.cost import Workload, cost, resolve_price

    price = resolve_price(instance)
    workload = Workload(requests_per_month, tokens_per_request)
    plan = cost(best_tokens_per_s, price, workload)
    rows = [{"machines": n, "output_tokens_per_s": round(n * best_tokens_per_s, 1),
             "requests_per_month_at_full_load": round(n * best_tokens_per_s * 3600 * 730 / tokens_per_request),
             "monthly_cost": round(n * 730 * price.price_per_hour, 2)} for n in machines]
    return {"layout": layout, "per_machine_tokens_per_s": best_tokens_per_s, "price": plan["price"],
            "dollars_per_million_tokens": round(plan["dollars_per_million_tokens"], 4),
            "workload": {k: (round(v, 2) if isinstance(v, float) else v) for k, v in plan["workload"].items()},
            "machines": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="smollm2-135m-ct2-int8")
    ap.add_argument("--engine", default="ctranslate2")
    ap.add_argument("--levels", default="1,16,64")
    ap.add_argument("--requests", default="1:8,16:32,64:64", help="requests per level (LEVEL:N,...)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64, help="max_batch_size of serve-2t and ray-1x2 (ray-2x1: half each)")
    ap.add_argument("--proxy-requests", type=int, default=30)
    ap.add_argument("--workload", default="3000000x200", help="REQUESTSxTOKENS per month, for the paper plan")
    ap.add_argument("--instance", default="aws-t3.large", help="priced machine (2 vCPUs, as measured here)")
    ap.add_argument("--out", type=Path, default=result_path("ray_layouts.json"))
    ap.add_argument("--logs", default="/tmp/slipstream-ray-bench")
    args = ap.parse_args()

    from slipstream.machine import describe_machine

    ensure_ct2_int8(args.variant)
    levels = [int(x) for x in args.levels.split(",")]
    requests = requests_per_level(args.requests, levels)
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    prompts = load_prompts(80)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    record: dict = {"command": " ".join(sys.argv), "machine": describe_machine(), "variant": args.variant,
                    "engine": args.engine, "max_tokens": args.max_tokens, "batch": args.batch,
                    "requests_per_level": requests, "levels": {},
                    "workload": "mt-bench first turns as chat, greedy, ignore_eos, streamed"}
    server = deployment = None
    try:
        server = Server("serve-2t", slipstream_cmd(args.variant, args.engine, 2, args.batch, []), env,
                        logs / "serve.log", args.variant)
        port = 18500 + os.getpid() % 1000
        # Ray CPUs are reservations: the three layouts together reserve 4 on a 2-core machine
        deployment = Deployment(deploy_spec(args.variant, port, args.batch), logs / "deploy.log", 4)
        record["startup_s"] = {"serve-2t": round(server.startup_s, 1), "deploy": round(deployment.startup_s, 1)}
        targets = {"serve-2t": (server.url, args.variant), "ray-1x2": (deployment.url, "one"),
                   "ray-2x1": (deployment.url, "two")}
        for url, model in targets.values():  # warm-up
            asyncio.run(run_level(url, model, prompts, 2, 4, 4))
        for i, c in enumerate(levels):
            order = list(targets.items()) if i % 2 == 0 else list(targets.items())[::-1]
            for label, (url, model) in order:
                r = asyncio.run(run_level(url, model, prompts, c, requests[c], args.max_tokens))
                record["levels"].setdefault(str(c), {})[label] = r
                print(f"{label:9s} c={c:3d} {r['output_tokens_per_s']:8.1f} tok/s  TTFT p50 {r['ttft_s']['p50']:.3f} s"
                      f"  TPOT p95 {r['tpot_s'].get('p95', 0) * 1000:.1f} ms", flush=True)
                write_json(args.out, record)
        record["proxy"] = proxy_cost({"serve-2t": targets["serve-2t"], "ray-1x2": targets["ray-1x2"]}, prompts,
                                     args.proxy_requests)
        record["proxy"]["added_ms"] = round(record["proxy"]["ray-1x2"]["median_ttft_ms"]
                                            - record["proxy"]["serve-2t"]["median_ttft_ms"], 2)
        print(f"proxy: {record['proxy']}", flush=True)
    finally:
        if deployment is not None:
            deployment.stop()
        if server is not None:
            server.stop()
    at16 = record["levels"].get("16", {})
    if at16:
        best_ray = max(("ray-1x2", "ray-2x1"), key=lambda k: at16[k]["output_tokens_per_s"])
        best = max(at16, key=lambda k: at16[k]["output_tokens_per_s"])
        record["at_16_streams"] = {
            "best_layout": best, "best_ray_layout": best_ray,
            "best_ray_over_serve": round(at16[best_ray]["output_tokens_per_s"] / at16["serve-2t"]["output_tokens_per_s"], 3),
            "target_within_10_percent": at16[best_ray]["output_tokens_per_s"] >= 0.9 * at16["serve-2t"]["output_tokens_per_s"]}
        reqs, tokens = (float(x) for x in args.workload.split("x"))
        record["on_paper"] = on_paper(at16[best_ray]["output_tokens_per_s"], best_ray, [1, 2, 4, 8], reqs, tokens,
                                      args.instance)
    if "proxy" in record:
        record["proxy"]["target_at_most_5_ms"] = record["proxy"]["added_ms"] <= 5.0
    write_json(args.out, record)
    print(markdown(record))


def markdown(record: dict) -> str:
    lines = ["| layout | streams | out tok/s | TTFT p50 (s) | TPOT p50 / p95 (ms) |", "|---|---|---|---|---|"]
    for c, by in record["levels"].items():
        for label, r in by.items():
            p = r["tpot_s"]
            lines.append(f"| {label} | {c} | {r['output_tokens_per_s']:.1f} | {r['ttft_s']['p50']:.3f} | "
                         f"{p.get('p50', 0) * 1000:.1f} / {p.get('p95', 0) * 1000:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
