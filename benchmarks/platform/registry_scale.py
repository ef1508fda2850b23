"""Registry at scale (issue 26): with 1,000 variants and 200 jobs in the registry, does the platform's REST API
list models and jobs within 200 ms at the median, and does the web UI's models page render within 1 s in the
browser, on SQLite and on PostgreSQL?

For each database the benchmark fills a fresh store through slipstream's own registry (``Store(home).registry``:
add_variant, add_result, add_job, update_job, add_job_event), then starts ``slipstream platform`` on it as its
own process on 127.0.0.1 and measures it from outside:

  - the store: ``--bases`` imported models (20) with 49 variants each, 1,000 rows in all: CTranslate2, GGUF,
    ONNX, AWQ, GPTQ, bitsandbytes, casts, SmoothQuant and pruning, some made from other variants (SmoothQuant
    then CTranslate2; pruning, distillation, then exports), with the technique dicts, sizes and parameter
    counts such variants have, and two stored results each (a WikiText-2 evaluation and a benchmark with its
    per-token samples). Rows only: the platform lists and shows variants from the registry and never opens
    their files, so no weights are written.
  - ``--jobs`` jobs (200) of every kind with ~10 events each (queued, running, progress, a log line, the end):
    succeeded, failed, cancelled, and a few running. No job is left queued: the platform's runner would claim
    it and start a worker while the timing runs. The running ones name this process as their worker's pid, so
    the platform sees them alive and leaves them be, as it leaves another service's workers.
  - REST API: ``GET /api/v1/models`` (all 1,000), ``GET /api/v1/jobs?limit=200`` and ``GET /api/v1/models/NAME``
    of a variant three steps from its base, over one keep-alive connection with httpx: ``--warmup`` requests,
    then ``--requests`` timed ones each (request sent to body read). Target: median within 200 ms.
  - web UI in headless Chromium (Debian's /usr/bin/chromium through Playwright, which never downloads a
    browser), the API key already in the browser's local storage as the key form leaves it: ``--loads`` timed
    loads of ``/ui/#/models`` (after one warm-up), each in a fresh browser context (nothing cached), from the
    navigation's start until the table holds every row and the browser has painted it (the page sets
    ``body[data-page=models]`` once it has rendered the table; the time is taken at the next frame after
    that). A model's own page (``#/models/NAME``) is timed the same way. Target: median within 1 s.

PostgreSQL is a throwaway server (initdb in a temporary directory, ``fsync=off``, as tests/postgres.py starts it
for the tests) pointed at with ``SLIPSTREAM_DATABASE_URL``; without PostgreSQL or psycopg it is skipped with the
reason. The figures are compared with their targets and recorded with ``meets_target``; the script exits 0
whatever they are (a benchmark reports, it does not fail).

Usage (writes benchmarks/results/<machine>/registry_scale.json; about 3 minutes on 2 cores):
    .venv/bin/python benchmarks/platform/registry_scale.py
    .venv/bin/python benchmarks/platform/registry_scale.py --databases sqlite --requests 20 --loads 3   # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(ROOT)]
from common import result_path, write_json  # noqa: E402  (benchmarks/common.py)

KEY = "sk-registry-scale"
API_TARGET_S = 0.200  # median answer of a listing
UI_TARGET_S = 1.0  # median time to the models page rendered
CHROMIUM = "/usr/bin/chromium"

# Imported models: name, architecture, parameters, where it came from.
BASES = [
    ("smollm2-135m", "LlamaForCausalLM", 134_515_008, "HuggingFaceTB/SmolLM2-135M-Instruct"),
    ("smollm2-360m", "LlamaForCausalLM", 361_821_120, "HuggingFaceTB/SmolLM2-360M-Instruct"),
    ("smollm2-1.7b", "LlamaForCausalLM", 1_711_376_384, "HuggingFaceTB/SmolLM2-1.7B-Instruct"),
    ("gemma-3-270m", "Gemma3ForCausalLM", 268_098_176, "google/gemma-3-270m-it"),
    ("gemma-3-1b", "Gemma3ForCausalLM", 999_885_952, "google/gemma-3-1b-it"),
    ("qwen2.5-0.5b", "Qwen2ForCausalLM", 494_032_768, "Qwen/Qwen2.5-0.5B-Instruct"),
    ("qwen2.5-1.5b", "Qwen2ForCausalLM", 1_543_714_304, "Qwen/Qwen2.5-1.5B-Instruct"),
    ("qwen2.5-3b", "Qwen2ForCausalLM", 3_085_938_688, "Qwen/Qwen2.5-3B-Instruct"),
    ("qwen3-0.6b", "Qwen3ForCausalLM", 596_049_920, "Qwen/Qwen3-0.6B"),
    ("qwen3-1.7b", "Qwen3ForCausalLM", 1_720_574_976, "Qwen/Qwen3-1.7B"),
    ("llama-3.2-1b", "LlamaForCausalLM", 1_235_814_400, "meta-llama/Llama-3.2-1B-Instruct"),
    ("llama-3.2-3b", "LlamaForCausalLM", 3_212_749_824, "meta-llama/Llama-3.2-3B-Instruct"),
    ("phi-3.5-mini", "Phi3ForCausalLM", 3_821_079_552, "microsoft/Phi-3.5-mini-instruct"),
    ("tinyllama-1.1b", "LlamaForCausalLM", 1_100_048_384, "TinyLlama/TinyLlama-1.1B-Chat-v1.0"),
    ("olmo-2-1b", "Olmo2ForCausalLM", 1_484_916_736, "allenai/OLMo-2-0425-1B-Instruct"),
    ("granite-3.1-1b", "GraniteMoeForCausalLM", 1_334_886_400, "ibm-granite/granite-3.1-1b-a400m-instruct"),
    ("stablelm-2-1.6b", "StableLmForCausalLM", 1_644_515_328, "stabilityai/stablelm-2-1_6b-chat"),
    ("pythia-410m", "GPTNeoXForCausalLM", 405_334_016, "EleutherAI/pythia-410m"),
    ("opt-350m", "OPTForCausalLM", 331_196_416, "facebook/opt-350m"),
    ("mobilellm-600m", "MobileLLMForCausalLM", 603_000_000, "facebook/MobileLLM-600M"),
]

_CT2 = ["int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32"]
_GGUF = ["F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_K_S", "Q4_0"]
# bytes per parameter on disk, by quantization
_BYTES = {"int8": 1.04, "int8_float32": 1.04, "int8_float16": 1.04, "int8_bfloat16": 1.04, "int16": 2.0,
          "float16": 2.0, "bfloat16": 2.0, "float32": 4.0, "F32": 4.0, "F16": 2.0, "BF16": 2.0, "Q8_0": 1.07,
          "Q6_K": 0.83, "Q5_K_M": 0.72, "Q4_K_M": 0.61, "Q4_K_S": 0.58, "Q4_0": 0.57}
_CAL = {"calibration": "wikitext2-valid"}


def _step(suffix: str, fmt: str, technique: dict, bytes_per_param: float, params: float = 1.0) -> tuple:
    """One derivation: the name's suffix, the format it makes, the technique as the store records it, bytes
    per parameter on disk, and the parameters kept (pruning keeps fewer)."""
    return suffix, fmt, technique, bytes_per_param, params


# What an imported model's variants look like: made from the model itself ...
DIRECT = (
    [_step(f"ct2-{q.replace('_', '-')}", "ctranslate2", {"technique": "ctranslate2", "quantization": q}, _BYTES[q])
     for q in _CT2]
    + [_step(f"gguf-{q.lower()}", "gguf", {"technique": "gguf", "quantization": q}, _BYTES[q]) for q in _GGUF]
    + [_step("onnx-fp32", "onnx", {"technique": "onnx", "quantization": "float32"}, 4.0),
       _step("onnx-int8", "onnx", {"technique": "onnx", "quantization": "int8_dynamic", "per_channel": True,
                                   "activations": "per_token"}, 1.1),
       _step("onnx-int8-static", "onnx", {"technique": "onnx", "quantization": "int8_static", "samples": 32,
                                          "sequence_length": 256, "ranges": "minmax", **_CAL}, 1.1),
       _step("onnx-int8-block32", "onnx", {"technique": "onnx", "quantization": "int8_blockwise",
                                           "block_size": 32}, 1.2)]
    + [_step(f"{m}-w{b}", "hf", {"technique": m, "bits": b, "group_size": 128, "symmetric": True, "samples": 128,
                                 "sequence_length": 512, **_CAL}, 0.3 + b / 8) for m in ("awq", "gptq") for b in (4, 8)]
    + [_step(f"bnb-{q}", "hf", {"technique": "bitsandbytes", "quant_type": q, "compute_dtype": "float32"},
             0.6 if q != "int8" else 1.1) for q in ("nf4", "fp4", "int8")]
    + [_step(f"{d}", "hf", {"technique": "cast", "dtype": d}, 2.0) for d in ("fp16", "bf16")]
    + [_step(f"sq{a}", "hf", {"technique": "smoothquant", "alpha": float(a), "samples": 64, "search_samples": 8,
                              "sequence_length": 512, "lm_head": False, **_CAL}, 4.0) for a in ("0.5", "0.7", "0.8")]
    + [_step("prune25", "hf", {"technique": "prune-structured", "layers": 0.25, "mlp": 0.0, "heads": 0.0,
                               "samples": 32, "sequence_length": 512, **_CAL}, 4.0, 0.78),
       _step("rows", "hf", {"technique": "int8-rows", "dampening": 0.01, "block_size": 128, "samples": 64,
                            "sequence_length": 512, **_CAL}, 4.0)]
)
# ... and from other variants: (the parent's suffix, the step)
DERIVED = [
    ("sq0.7", _step("ct2-int8", "ctranslate2", {"technique": "ctranslate2", "quantization": "int8"}, 1.04)),
    ("sq0.7", _step("ct2-int8-float32", "ctranslate2", {"technique": "ctranslate2", "quantization": "int8_float32"},
                    1.04)),
    ("sq0.7", _step("onnx-int8-static", "onnx", {"technique": "onnx", "quantization": "int8_static", **_CAL}, 1.1)),
    ("sq0.5", _step("ct2-int8", "ctranslate2", {"technique": "ctranslate2", "quantization": "int8"}, 1.04)),
    ("sq0.8", _step("ct2-int8", "ctranslate2", {"technique": "ctranslate2", "quantization": "int8"}, 1.04)),
    ("sq0.8", _step("w8a8", "hf", {"technique": "w8a8", "scheme": "W8A8", "samples": 128, "keep_float": [],
                                   **_CAL}, 1.1)),
    ("rows", _step("ct2-int8", "ctranslate2", {"technique": "ctranslate2", "quantization": "int8"}, 1.04)),
    ("bf16", _step("gguf-bf16", "gguf", {"technique": "gguf", "quantization": "BF16"}, 2.0)),
    ("prune25", _step("distill", "hf", {"technique": "distill", "teacher": "root", "data": "wikitext2-valid",
                                        "steps": 200, "batch_size": 4, "sequence_length": 256,
                                        "learning_rate": 0.0001, "temperature": 2.0}, 4.0)),
    ("prune25-distill", _step("ct2-int8", "ctranslate2", {"technique": "ctranslate2", "quantization": "int8"},
                              1.04)),
    ("prune25-distill", _step("gguf-q8_0", "gguf", {"technique": "gguf", "quantization": "Q8_0"}, 1.07)),
    ("prune25-distill", _step("gguf-q4_k_m", "gguf", {"technique": "gguf", "quantization": "Q4_K_M"}, 0.61)),
    ("prune25-distill", _step("onnx-int8", "onnx", {"technique": "onnx", "quantization": "int8_dynamic"}, 1.1)),
    ("prune25-distill", _step("awq-w4", "hf", {"technique": "awq", "bits": 4, "group_size": 128, **_CAL}, 0.8)),
]
PER_BASE = 1 + len(DIRECT) + len(DERIVED)  # 50: the model and its 49 variants
# The variant whose own page is timed: three steps from its base (pruned, distilled, converted).
DEEP = "prune25-distill-ct2-int8"

JOB_KINDS = ["optimize"] * 9 + ["evaluate"] * 5 + ["bench"] * 4 + ["import", "search"]
JOB_ENDS = ["succeeded"] * 13 + ["failed"] * 4 + ["cancelled"] * 2 + ["running"]
ERRORS = ["NotFound: no model or variant named 'gone'",
          ("InvalidConfig: gguf: quantization 'Q3' is not one of F32, F16, BF16, Q8_0, Q6_K, Q5_K_M, Q5_K_S, "
           "Q4_K_M, Q4_K_S, Q4_0"),
          "MissingExtra: awq needs llm-compressor: pip install 'slipstream[llmc]'",
          "the worker exited with code -9; see the job's log"]


def iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


def percentiles(seconds: list[float], target_s: float) -> dict[str, Any]:
    ordered = sorted(seconds)
    median = statistics.median(ordered)
    return {"n": len(ordered), "median_ms": round(median * 1e3, 2),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1e3, 2),
            "min_ms": round(ordered[0] * 1e3, 2), "max_ms": round(ordered[-1] * 1e3, 2),
            "target_ms": round(target_s * 1e3), "meets_target": median <= target_s}


# --- filling the store ------------------------------------------------------------------------------------

def results_for(rng: random.Random, params: int) -> list[tuple]:
    """A WikiText-2 evaluation and a decode benchmark, as slipstream evaluate and slipstream bench store them."""
    ppl = rng.uniform(9, 30)
    nll = math.log(ppl)
    engine = {"engine": "ctranslate2", "compute_type": "int8", "device": "cpu", "threads": 1, "details": {}}
    evaluation = ({"kind": "perplexity", "task": "wikitext2", "max_tokens": 8192, "window": 1024, "stride": 512,
                   "method": 3, "reference": None},
                  {"engine": engine, "nll": nll, "nll_stderr": rng.uniform(0.02, 0.04), "perplexity": ppl,
                   "perplexity_ci95": [ppl * 0.94, ppl * 1.07], "tokens": 8191})
    tpot = sorted(rng.uniform(0.02, 0.05) * params / 3e8 for _ in range(64))
    tps = 1 / statistics.median(tpot)
    bench = ({"batch_sizes": [1, 8], "device": "cpu", "engine": None, "output_tokens": 64, "prompt_tokens": 128,
              "repeats": 3, "threads": 1, "warmup": 1, "workload": "fixed"},
             {"engine": engine, "latency": {"decode_tokens_per_s": {"median": tps, "min": tps * 0.95, "max": tps * 1.04,
                                                                   "iqr": tps * 0.03, "n": 3},
                                            "ttft_s": {"p50": tpot[0] * 9, "p95": tpot[-1] * 10},
                                            "output_tokens": 64, "prompt_tokens": 128,
                                            "samples": {"tpot_s": tpot}},
              "throughput": [{"batch_size": b, "output_tokens_per_s": {"median": tps * b * 0.7, "n": 3}}
                             for b in (1, 8)],
              "peak_rss_bytes": int(params * 1.3)})
    return [("evaluation", evaluation), ("benchmark", bench)]


def fill(store: Any, n_bases: int, n_jobs: int, events: int, seed: int = 0) -> dict[str, Any]:
    """``n_bases`` x 50 variants with two results each and ``n_jobs`` jobs with about ``events`` events each,
    written through the registry as slipstream writes them; the rows written and the seconds it took."""
    from slipstream.machine import describe_machine
    from slipstream.store.registry import VariantRow

    rng = random.Random(seed)
    registry = store.registry
    machine = describe_machine()
    versions = {"ctranslate2": "4.8.5", "python": "3.11.7", "slipstream": "0.1.0", "torch": "2.13.0+cpu",
                "transformers": "5.17.0"}
    start = time.perf_counter()
    t0 = datetime.now(timezone.utc) - timedelta(days=90)
    names: list[str] = []
    n_results = 0
    bases = [BASES[i % len(BASES)] for i in range(n_bases)]
    for i, (base, arch, params, hub) in enumerate(bases):
        base = base if i < len(BASES) else f"{base}-{i // len(BASES)}"
        when = t0 + timedelta(days=i * 4)
        made: dict[str, tuple[str, int]] = {}  # suffix -> (name, parameters)

        def add(name: str, parent: str | None, fmt: str, technique: dict | None, size: int, p: int,
                source: str, arch: str = arch) -> None:
            nonlocal when, n_results
            when += timedelta(minutes=rng.randint(3, 90))
            registry.add_variant(VariantRow(
                name=name, kind="variant" if parent else "model", format=fmt, architecture=arch, parameters=p,
                size_bytes=size, sha256=f"{rng.getrandbits(256):064x}", source=source, parent=parent,
                technique=technique, device="cpu" if parent else None, path=f"variants/{name}", created=iso(when)))
            for kind, (settings, metrics) in results_for(rng, p):
                store.add_result(name, kind, f"{rng.getrandbits(256):064x}", settings, metrics, machine, versions)
                n_results += 1
            names.append(name)

        add(base, None, "hf", None, params * 4 + 2_000_000, params, f"hub: {hub}")
        made[""] = (base, params)
        for parent_suffix, (suffix, fmt, technique, bpp, kept) in [("", s) for s in DIRECT] + DERIVED:
            parent, parent_params = made[parent_suffix]
            p = int(parent_params * kept)
            name = f"{parent}-{suffix}"
            add(name, parent, fmt, technique, int(p * bpp) + 1_500_000, p,
                f"{technique['technique']} of {parent}")
            made[f"{parent_suffix}-{suffix}".lstrip("-")] = (name, p)
    variants_s = time.perf_counter() - start

    start = time.perf_counter()
    n_events = 0
    me = f"{socket.gethostname()}:{os.getpid()}"
    for j in range(n_jobs):
        kind, end = JOB_KINDS[j % len(JOB_KINDS)], JOB_ENDS[(j * 7) % len(JOB_ENDS)]
        model = names[rng.randrange(len(names))]
        spec = {"optimize": {"model": model, "technique": "ctranslate2", "options": {"quantization": "int8"},
                             "name": f"{model}-job{j}"},
                "evaluate": {"model": model, "max_tokens": 8192, "tasks": ["arc_easy"]},
                "bench": {"model": model, "threads": 1, "batch_sizes": [1, 8]},
                "import": {"source": "HuggingFaceTB/SmolLM2-135M-Instruct", "name": f"smollm2-135m-copy{j}"},
                "search": {"model": model, "metric": "perplexity", "max_drop": "1%", "objective": "latency",
                           "budget": "30m"}}[kind]
        job = registry.add_job(kind, spec)

        def event(e: dict, job_id: str = job.id) -> None:
            nonlocal n_events
            registry.add_job_event(job_id, e)
            n_events += 1

        event({"type": "state", "state": "queued"})
        pid = os.getpid() if end == "running" else 200_000 + j  # a running job's worker is alive (this process)
        registry.update_job(job.id, state="running", pid=pid, attempts=1, worker=me, started=job.created)
        event({"type": "state", "state": "running"})
        stages = events - 4 if end != "running" else events - 5
        progress = None
        for s in range(max(stages, 0)):
            fraction = round((s + 1) / stages, 4)
            progress = {"stage": ["loading", "calibrating", "converting", "evaluating", "measuring"][s % 5],
                        "done": s + 1, "total": stages, "fraction": fraction,
                        "time_left_s": round((stages - s - 1) * rng.uniform(2, 20), 1)}
            event({"type": "progress", **progress})
        registry.update_job(job.id, progress=progress)
        event({"type": "log", "message": f"{kind} {spec.get('model', spec.get('source'))}: {stages} stages"})
        if end == "running":
            continue
        result = error = None
        if end == "succeeded":
            result = {"optimize": {"variant": spec.get("name"), "size_bytes": 139_804_155,
                                   "technique": {"technique": "ctranslate2", "quantization": "int8"}},
                      "evaluate": {"reports": [{"variant": model, "task": "wikitext2", "perplexity": 20.79,
                                                "reference_perplexity": 20.006, "drop": 0.0392, "kl": 0.03,
                                                "top1": 0.889, "tokens": 8191},
                                               {"variant": model, "task": "arc_easy", "acc_norm": 0.453,
                                                "items": 300}]},
                      "bench": {"report": {"variant": model, "threads": 1, "decode_tokens_per_s": 57.3,
                                           "throughput": [{"batch_size": 1, "output_tokens_per_s": 57.3},
                                                          {"batch_size": 8, "output_tokens_per_s": 201.4}]}},
                      "import": {"variant": spec.get("name")},
                      "search": {"chosen": f"{model}-gguf-q8_0", "candidates": 19, "passed": 6,
                                 "report": "searches/ledger.json"}}[kind]
        elif end == "failed":
            error = ERRORS[j % len(ERRORS)]
        else:
            error = "cancelled by a user"
        registry.update_job(job.id, state=end, result=result, error=error, finished=job.created)
        event({"type": "state", "state": end, **({"result": result} if result else {}),
               **({"error": error} if end == "failed" else {})})
    jobs_s = time.perf_counter() - start
    return {"variants": len(names), "results": n_results, "jobs": n_jobs, "job_events": n_events,
            "fill_variants_s": round(variants_s, 1), "fill_jobs_s": round(jobs_s, 1),
            "deep_variant": f"{names[0]}-{DEEP}"}


# --- the platform, as its own process ---------------------------------------------------------------------

class PlatformProcess:
    """``slipstream platform --port 0`` on 127.0.0.1 with the benchmark's key; ``url`` once /health answers."""

    def __init__(self, env: dict[str, str], log: Path, timeout_s: float = 120):
        self.log_path = log
        self.log = open(log, "w")
        cmd = [sys.executable, "-c", "from slipstream.cli.main import main; main()", "platform", "--port", "0",
               "--api-key", KEY]
        start = time.monotonic()
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        threading.Thread(target=self._tee, args=(lines,), daemon=True).start()
        self.url = None
        while self.url is None:
            self._check(start, timeout_s)
            found = re.search(r"listening on (http://\S+)", "\n".join(lines))
            self.url = found.group(1) if found else None
            time.sleep(0.05)
        while True:
            self._check(start, timeout_s)
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.startup_s = round(time.monotonic() - start, 2)

    def _tee(self, lines: list[str]) -> None:
        for line in self.proc.stdout:
            lines.append(line.rstrip("\n"))
            self.log.write(line)
            self.log.flush()

    def _check(self, start: float, timeout_s: float) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"slipstream platform exited with {self.proc.returncode}: "
                               f"{self.log_path.read_text()[-2000:]}")
        if time.monotonic() - start > timeout_s:
            self.stop()
            raise RuntimeError(f"slipstream platform not ready after {timeout_s:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# --- measuring --------------------------------------------------------------------------------------------

def time_api(url: str, paths: dict[str, str], warmup: int, requests: int) -> dict[str, Any]:
    """Each path: ``warmup`` requests, then ``requests`` timed ones (sent to body read), interleaved by path so
    that a slow moment of the machine falls on all of them alike."""
    out: dict[str, Any] = {}
    samples: dict[str, list[float]] = {label: [] for label in paths}
    sizes: dict[str, int] = {}
    counts: dict[str, int] = {}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
        for i in range(warmup + requests):
            for label, path in paths.items():
                start = time.perf_counter()
                r = c.get(path)
                body = r.content
                seconds = time.perf_counter() - start
                if r.status_code != 200:
                    raise RuntimeError(f"GET {path}: {r.status_code} {body[:300]!r}")
                if i >= warmup:
                    samples[label].append(seconds)
                else:
                    sizes[label] = len(body)
                    data = json.loads(body)
                    counts[label] = len(data["data"]) if "data" in data else len(data.get("results", []))
    for label, path in paths.items():
        out[label] = {"path": path, "body_bytes": sizes[label], "items": counts[label],
                      **percentiles(samples[label], API_TARGET_S)}
    return out


# Installed before the page's own scripts: notes when the page says it has rendered (body[data-page]), how many
# table rows it holds then, and the time at the next frame after, once the browser has painted it.
PAGE_TIMER = """
window.__bench = {};
new MutationObserver(() => {
  const b = window.__bench, page = document.body && document.body.dataset.page;
  if (!page || b.ready) return;
  b.page = page;
  b.ready = performance.now();
  b.rows = document.querySelectorAll("#models tbody tr").length;
  requestAnimationFrame(() => setTimeout(() => { b.painted = performance.now(); }, 0));
}).observe(document, {attributes: true, subtree: true, attributeFilter: ["data-page"]});
"""


def time_ui(browser: Any, url: str, route: str, page_name: str, rows: int | None, loads: int) -> dict[str, Any]:
    """``loads`` timed loads of ``/ui/ROUTE`` (after one warm-up), each in a fresh browser context with the key in
    its local storage: the wall time from page.goto until the page has rendered (and ``rows`` table rows, when
    given) and painted, and the browser's own time from the navigation's start to that paint."""
    wall, browser_s, ready_s = [], [], []
    errors: list[str] = []
    for i in range(loads + 1):
        context = browser.new_context()
        context.add_init_script(f"localStorage.setItem('slipstream.apiKey', {json.dumps(KEY)})")
        context.add_init_script(PAGE_TIMER)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        start = time.perf_counter()
        page.goto(f"{url}/ui/{route}", wait_until="commit")
        page.wait_for_function("() => window.__bench && window.__bench.painted !== undefined", timeout=60_000,
                               polling=10)
        seconds = time.perf_counter() - start
        b = page.evaluate("window.__bench")
        context.close()
        if b["page"] != page_name:
            raise RuntimeError(f"/ui/{route}: the page became {b['page']!r}, not {page_name!r} (errors: {errors})")
        if rows is not None and b["rows"] != rows:
            raise RuntimeError(f"/ui/{route}: {b['rows']} rows rendered, expected {rows}")
        if i == 0:
            continue  # warm-up: the browser's first page, the server's first UI files
        wall.append(seconds)
        browser_s.append(b["painted"] / 1e3)
        ready_s.append(b["ready"] / 1e3)
    return {"route": route, "rows": rows, **percentiles(wall, UI_TARGET_S),
            "browser_to_paint": percentiles(browser_s, UI_TARGET_S),
            "browser_to_ready": percentiles(ready_s, UI_TARGET_S), "page_errors": errors}


def run_database(db: str, args: argparse.Namespace, browser: Any, env_extra: dict[str, str],
                 work: Path) -> dict[str, Any]:
    from slipstream.store import Store
    from slipstream.store.registry import DATABASE_URL_ENV

    home = work / f"home-{db}"
    env = {k: v for k, v in os.environ.items() if k != DATABASE_URL_ENV} | {"SLIPSTREAM_HOME": str(home)} | env_extra
    saved = os.environ.get(DATABASE_URL_ENV)
    os.environ.pop(DATABASE_URL_ENV, None)
    os.environ.update(env_extra)  # Store() reads the database's URL from the environment, as the platform will
    try:
        store = Store(home)
        print(f"[{db}] filling {store.registry!r}: {args.bases} x {PER_BASE} variants, {args.jobs} jobs", flush=True)
        filled = fill(store, args.bases, args.jobs, args.events)
    finally:
        os.environ.pop(DATABASE_URL_ENV, None)
        if saved is not None:
            os.environ[DATABASE_URL_ENV] = saved
    print(f"[{db}] filled: {filled['variants']} variants, {filled['results']} results in {filled['fill_variants_s']} s; "
          f"{filled['jobs']} jobs, {filled['job_events']} events in {filled['fill_jobs_s']} s", flush=True)
    platform = PlatformProcess(env, work / f"platform-{db}.log")
    try:
        deep = filled["deep_variant"]
        api = time_api(platform.url, {"list_models": "/api/v1/models", "list_jobs": f"/api/v1/jobs?limit={args.jobs}",
                                      "show_model": f"/api/v1/models/{deep}"}, args.warmup, args.requests)
        if api["list_models"]["items"] != filled["variants"] or api["list_jobs"]["items"] != filled["jobs"]:
            raise RuntimeError(f"the API lists {api['list_models']['items']} models and {api['list_jobs']['items']} "
                               f"jobs, {filled['variants']} and {filled['jobs']} were written")
        for r in api.values():
            print(f"[{db}] GET {r['path']}: median {r['median_ms']} ms, p95 {r['p95_ms']} ms "
                  f"({r['items']} items, {r['body_bytes'] / 1e3:.0f} kB)", flush=True)
        ui = {}
        if browser is not None:
            ui["models_page"] = time_ui(browser, platform.url, "#/models", "models", filled["variants"], args.loads)
            ui["model_page"] = time_ui(browser, platform.url, f"#/models/{deep}", "model", None, args.loads)
            for r in ui.values():
                print(f"[{db}] /ui/{r['route']}: median {r['median_ms']} ms, p95 {r['p95_ms']} ms "
                      f"(browser, navigation start to paint: median {r['browser_to_paint']['median_ms']} ms)",
                      flush=True)
    finally:
        platform.stop()
    return {"store": filled, "platform_startup_s": platform.startup_s, "api": api, "ui": ui}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bases", type=int, default=20, help=f"imported models, each with {PER_BASE - 1} variants")
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--events", type=int, default=10, help="events per finished job")
    ap.add_argument("--warmup", type=int, default=5, help="untimed requests per API path")
    ap.add_argument("--requests", type=int, default=50, help="timed requests per API path")
    ap.add_argument("--loads", type=int, default=10, help="timed loads per UI page (after one warm-up)")
    ap.add_argument("--databases", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    ap.add_argument("--no-browser", action="store_true", help="the REST API only")
    ap.add_argument("--out", type=Path, default=None,
                    help="default: benchmarks/results/<machine>/registry_scale.json")
    args = ap.parse_args()

    from slipstream.machine import describe_machine

    machine = describe_machine()
    work = Path(tempfile.mkdtemp(prefix="slipstream-registry-scale-"))
    record: dict[str, Any] = {"question": "with 1,000 variants and 200 jobs in the registry, do the REST API's "
                                          "listings answer within 200 ms and the web UI's models page render "
                                          "within 1 s (medians), on SQLite and PostgreSQL?",
                              "machine": machine, "settings": vars(args) | {"out": str(args.out)},
                              "targets_ms": {"api_median": API_TARGET_S * 1e3, "ui_median": UI_TARGET_S * 1e3},
                              "databases": {}}
    # the machine may be shared: what else was running shows in its load, recorded at the start and the end
    record["load_average_start"] = [round(x, 2) for x in os.getloadavg()]
    started = time.monotonic()
    pw = browser = None
    try:
        if not args.no_browser:
            from playwright.sync_api import sync_playwright

            if not Path(CHROMIUM).exists():
                raise SystemExit(f"{CHROMIUM} is missing (Debian: apt-get install chromium); playwright must not "
                                 "download its own browser; or run with --no-browser")
            pw = sync_playwright().start()
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
            record["browser"] = f"chromium {browser.version} (headless)"
        for db in args.databases:
            if db == "sqlite":
                import sqlite3

                result = run_database(db, args, browser, {}, work)
                result["server"] = f"SQLite {sqlite3.sqlite_version} (WAL, {tempfile.gettempdir()})"
                record["databases"][db] = result
                continue
            from tests.postgres import USER, PostgresServer, Unavailable

            try:
                server = PostgresServer.start()
            except (Unavailable, RuntimeError) as exc:
                print(f"[postgresql] skipped: {exc}", flush=True)
                record["databases"][db] = {"skipped": str(exc)}
                continue
            try:
                url = server.create_database()
                import psycopg

                with psycopg.connect(f"host=127.0.0.1 port={server.port} user={USER} dbname=postgres") as c:
                    version = c.execute("SHOW server_version").fetchone()[0]
                result = run_database(db, args, browser, {"SLIPSTREAM_DATABASE_URL": url}, work)
                result["server"] = (f"PostgreSQL {version} on 127.0.0.1 (throwaway, fsync=off as tests/postgres.py "
                                    "starts it)")
                record["databases"][db] = result
                server.drop_database(url)
            finally:
                server.stop()
    finally:
        if browser is not None:
            browser.close()
        if pw is not None:
            pw.stop()
        shutil.rmtree(work, ignore_errors=True)

    verdicts: dict[str, bool] = {}
    for db, r in record["databases"].items():
        for label, fig in {**r.get("api", {}), **r.get("ui", {})}.items():
            verdicts[f"{db} {label}"] = fig["meets_target"]
    record["meets_target"] = verdicts
    record["all_meet_target"] = bool(verdicts) and all(verdicts.values())
    record["wall_s"] = round(time.monotonic() - started, 1)
    record["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    out = args.out or result_path("registry_scale.json")
    write_json(out, record)

    cpu = f"{machine.get('cpu')}, {machine.get('logical_cpus')} logical CPUs"
    print(f"\nregistry at scale on {cpu} ({out.parent.name}); median against target, p95 beside:")
    for db, r in record["databases"].items():
        if "skipped" in r:
            print(f"  {db:<10} skipped: {r['skipped']}")
            continue
        for label, fig in {**r["api"], **r["ui"]}.items():
            what = f"GET {fig['path']}" if "path" in fig else f"/ui/{fig['route']}"
            print(f"  {db:<10} {what:<60} median {fig['median_ms']:>8.1f} ms  p95 {fig['p95_ms']:>8.1f} ms  "
                  f"target {fig['target_ms']:>5} ms  {'meets' if fig['meets_target'] else 'MISSES'}")
    print(f"verdict: {'every figure meets its target' if record['all_meet_target'] else 'a figure misses its target'}"
          f" ({record['wall_s']} s)")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
