"""Load and soak (issue 27): does `slipstream serve` answer every request, count what it answers, and keep its
memory, under sustained load?

It starts `slipstream serve VARIANT` (a real SmolLM2 variant; the CTranslate2 int8 one by default, made from the
bundled model when the store lacks it) on 127.0.0.1 with its default settings but ``--max-queue``, and drives it
with an asyncio httpx client at ``--concurrency`` connections:

  1. load: ``--requests`` short requests (``--max-tokens`` tokens; completions and chat alternating, one in four
     streamed; every prompt different, so no cache answers them). Every one must be answered 200, or 429 with
     Retry-After (the worker then waits that long, as a well-behaved client does); no connection error, no
     request without an answer, no stream ending in an error event. The server's request counters (/metrics,
     by endpoint and status, before and after) must equal the client's counts.
  2. soak: the same load for ``--soak-s`` seconds. The server's resident memory (RSS) is sampled every 10 s;
     after the load phase (the warm-up: caches full, every code path run) it may grow by at most 10% by the
     end. The counters must still match.

``--max-queue`` defaults to 32, so that 64 connections overrun max_batch_size (16) plus the queue and the 429
path is part of the load. Exits 1 if a check fails.

Usage (writes benchmarks/results/<machine>/load_soak.json; about 15 minutes with the defaults):
    SLIPSTREAM_HOME=~/.slipstream .venv/bin/python benchmarks/serving/load_soak.py
    .venv/bin/python benchmarks/serving/load_soak.py --requests 500 --soak-s 30   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from common import ensure_ct2_int8, result_path, write_json  # noqa: E402  (benchmarks/common.py)
from serving import Server  # noqa: E402  (benchmarks/serving/serving.py: a server process and its URL)

GROWTH_LIMIT = 0.10  # resident memory may grow by at most this over its level after warm-up
TOPICS = ["the sea", "a city at night", "bread", "the moon", "a library", "winter", "trains", "a garden"]


def counters(url: str) -> Counter:
    """``(endpoint, status) -> count`` from the server's slipstream_requests_total."""
    text = httpx.get(url + "/metrics", timeout=30).text
    out: Counter = Counter()
    for m in re.finditer(r'^slipstream_requests_total\{endpoint="([^"]+)",status="(\d+)"\} (\S+)$', text, re.M):
        out[(m.group(1), int(m.group(2)))] = int(float(m.group(3)))
    return out


class Client:
    """``concurrency`` workers sending request after request; counts by (endpoint, status) and every failure."""

    def __init__(self, url: str, model: str, concurrency: int, max_tokens: int):
        self.url, self.model, self.concurrency, self.max_tokens = url, model, concurrency, max_tokens
        self.counts: Counter = Counter()  # (endpoint, status) -> count
        self.failures: Counter = Counter()  # kind -> count: connection errors, bad 429s, stream errors, 5xx
        self.examples: list[str] = []
        self.latencies: list[float] = []
        self.sent = self.answered = 0
        self._next = 0

    def body(self, i: int) -> tuple[str, dict]:
        prompt = f"Request {i}: write one line about {TOPICS[i % len(TOPICS)]}."  # every prompt different
        common = {"model": self.model, "max_tokens": self.max_tokens, "temperature": 0, "stream": i % 4 == 3}
        if i % 2:
            return "/v1/chat/completions", {**common, "messages": [{"role": "user", "content": prompt}]}
        return "/v1/completions", {**common, "prompt": prompt}

    def _fail(self, kind: str, detail: str) -> None:
        self.failures[kind] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{kind}: {detail[:300]}")

    async def one(self, client: httpx.AsyncClient, i: int) -> float:
        """Send request ``i``; the seconds to wait before the next (Retry-After on a 429)."""
        path, body = self.body(i)
        self.sent += 1
        start = time.perf_counter()
        try:
            async with client.stream("POST", self.url + path, json=body) as r:
                text = (await r.aread()).decode("utf-8", "replace")
        except httpx.HTTPError as exc:  # nothing came back: a lost request
            self._fail("connection_error", f"{path}: {exc.__class__.__name__}: {exc}")
            return 0.0
        self.answered += 1
        self.counts[(path, r.status_code)] += 1
        if r.status_code == 429:
            retry = r.headers.get("retry-after")
            if retry is None:
                self._fail("429_without_retry_after", text)
                return 1.0
            return float(retry)
        if r.status_code != 200:
            self._fail(f"status_{r.status_code}", f"{path}: {text}")
            return 0.0
        if body["stream"]:
            events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
            if not events or events[-1] != "[DONE]" or any('"error"' in e for e in events):
                self._fail("stream_error", text)
        elif not json.loads(text).get("choices"):
            self._fail("empty_answer", text)
        self.latencies.append(time.perf_counter() - start)
        return 0.0

    async def run(self, *, requests: int | None = None, seconds: float | None = None,
                  tick: Any = None) -> dict:
        """Until ``requests`` have been sent, or for ``seconds``; ``tick()`` is awaited every 10 s meanwhile."""
        sent0, start = self.sent, time.perf_counter()
        stop = start + seconds if seconds is not None else None
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)

        async def worker(client: httpx.AsyncClient) -> None:
            while True:
                if requests is not None and self.sent - sent0 >= requests:
                    return
                if stop is not None and time.perf_counter() >= stop:
                    return
                i, self._next = self._next, self._next + 1
                wait = await self.one(client, i)
                if wait:
                    await asyncio.sleep(wait)

        async def ticker() -> None:
            while True:
                await asyncio.sleep(10)
                if tick is not None:
                    await tick()

        async with httpx.AsyncClient(timeout=httpx.Timeout(300.0), limits=limits) as client:
            ticking = asyncio.create_task(ticker())
            try:
                await asyncio.gather(*(worker(client) for _ in range(self.concurrency)))
            finally:
                ticking.cancel()
        wall = time.perf_counter() - start
        return {"requests": self.sent - sent0, "wall_s": round(wall, 1),
                "requests_per_s": round((self.sent - sent0) / wall, 1)}


def percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)
    return {f"p{q}": round(ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))], 4) for q in (50, 95, 99)}


def compare(client: tuple[Counter, Counter], server: tuple[Counter, Counter]) -> dict:
    """The server's counts over a phase against the client's (each a (before, after) pair of counters), for
    every (endpoint, status) either saw."""
    mine, theirs = client[1] - client[0], server[1] - server[0]
    rows = {f"{path} {status}": {"client": mine.get((path, status), 0), "server": theirs.get((path, status), 0)}
            for path, status in sorted(set(mine) | set(theirs))}
    return {"equal": all(r["client"] == r["server"] for r in rows.values()), "by_endpoint_status": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="smollm2-135m-ct2-int8",
                    help="store variant (made as CTranslate2 int8 from smollm2-135m if it is this name and missing)")
    ap.add_argument("--requests", type=int, default=10_000, help="requests in the load phase")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=4)
    ap.add_argument("--soak-s", type=float, default=600.0, help="seconds of the soak (0: none)")
    ap.add_argument("--threads", type=int, default=1, help="engine threads")
    ap.add_argument("--max-queue", type=int, default=32, help="the server's max_queue (429s past it)")
    ap.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/<machine>/load_soak.json")
    args = ap.parse_args()

    import psutil

    from slipstream.machine import describe_machine

    if args.variant == "smollm2-135m-ct2-int8":
        ensure_ct2_int8(args.variant)
    log = Path(tempfile.mkdtemp()) / "serve.log"
    cmd = [sys.executable, "-c", "from slipstream.cli.main import main; main()", "serve", args.variant,
           "--port", "0", "--threads", str(args.threads), "--max-queue", str(args.max_queue)]
    server = Server("serve", cmd, {**__import__("os").environ}, log, args.variant)
    process = psutil.Process(server.proc.pid)
    rss: list[tuple[float, int]] = []
    t0 = time.monotonic()

    async def sample() -> None:
        rss.append((round(time.monotonic() - t0, 1), process.memory_info().rss))

    record: dict[str, Any] = {"machine": describe_machine(), "variant": args.variant, "command": " ".join(cmd[3:]),
                              "settings": vars(args) | {"out": str(args.out)}, "banner": server.banner}
    checks: dict[str, bool] = {}
    try:
        client = Client(server.url, args.variant, args.concurrency, args.max_tokens)
        before = counters(server.url)
        load = asyncio.run(client.run(requests=args.requests, tick=sample))
        load["counts"] = compare((Counter(), Counter(client.counts)), (before, counters(server.url)))
        load["latency_s_of_200s"] = percentiles(client.latencies)
        load["answered"], load["failures"] = client.answered, dict(client.failures)
        print(f"load: {load['requests']} requests in {load['wall_s']} s ({load['requests_per_s']}/s), "
              f"failures {dict(client.failures) or 'none'}, counters equal: {load['counts']['equal']}", flush=True)
        checks["load: every request answered 200 or 429 with Retry-After"] = (
            not client.failures and client.answered == client.sent == args.requests)
        checks["load: server counters equal the client's"] = load["counts"]["equal"]
        record["load"] = load
        asyncio.run(sample())
        warm = rss[-1][1]
        if args.soak_s > 0:
            client.latencies.clear()
            before, mine = counters(server.url), Counter(client.counts)
            sent0, failures0 = client.sent, sum(client.failures.values())
            soak = asyncio.run(client.run(seconds=args.soak_s, tick=sample))
            asyncio.run(sample())
            end = rss[-1][1]
            soak["counts"] = compare((mine, Counter(client.counts)), (before, counters(server.url)))
            soak["latency_s_of_200s"] = percentiles(client.latencies)
            soak["failures"] = sum(client.failures.values()) - failures0
            soak["rss_after_warmup_mb"], soak["rss_end_mb"] = round(warm / 2**20, 1), round(end / 2**20, 1)
            soak["rss_max_mb"] = round(max(b for _, b in rss) / 2**20, 1)
            soak["rss_growth"] = round(end / warm - 1, 4)
            print(f"soak: {soak['requests']} requests in {soak['wall_s']} s, failures {soak['failures']}, RSS "
                  f"{soak['rss_after_warmup_mb']} -> {soak['rss_end_mb']} MB ({soak['rss_growth']:+.1%}), "
                  f"counters equal: {soak['counts']['equal']}", flush=True)
            checks["soak: no failure"] = soak["failures"] == 0 and client.answered == client.sent
            checks["soak: server counters equal the client's"] = soak["counts"]["equal"]
            checks[f"soak: RSS grew at most {GROWTH_LIMIT:.0%} after warm-up"] = soak["rss_growth"] <= GROWTH_LIMIT
            record["soak"] = soak
        record["rss_samples_mb"] = [(t, round(b / 2**20, 1)) for t, b in rss]
        metrics = httpx.get(server.url + "/metrics", timeout=30).text
        record["server_5xx"] = sum(v for (_, status), v in counters(server.url).items() if status >= 500)
        record["server_rejected_total"] = float(re.search(r"^slipstream_requests_rejected_total (\S+)$", metrics,
                                                          re.M).group(1))
        checks["server: no 5xx"] = record["server_5xx"] == 0
        record["examples"] = client.examples
    finally:
        server.stop()
    record["checks"] = checks
    record["passed"] = all(checks.values())
    out = args.out or result_path("load_soak.json")
    write_json(out, record)
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    print(f"wrote {out}")
    sys.exit(0 if record["passed"] else 1)


if __name__ == "__main__":
    main()
