"""Order check for benchmarks/serving.py: the transformers server at max_batch_size 64 vs 1, one stream,
alternating which goes first, 4 rounds of 3 requests x 32 tokens. Median per-request TPOT p50 per server.

    SLIPSTREAM_HOME=/tmp/demohome nice -n 10 .venv/bin/python benchmarks/serving_order_check.py
"""
import asyncio, os, sys, statistics
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving
env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
logs = Path("/tmp/slipstream-serving-order-check"); logs.mkdir(parents=True, exist_ok=True)
prompts = serving.load_prompts(80)
a = serving.Server("b64", serving.slipstream_cmd("smollm2-135m", "transformers", 1, 64, []), env, logs / "a.log", "smollm2-135m")
b = serving.Server("b1", serving.slipstream_cmd("smollm2-135m", "transformers", 1, 1, []), env, logs / "b.log", "smollm2-135m")
res = {"b64": [], "b1": []}
try:
    for s in (a, b):
        asyncio.run(serving.run_level(s.url, s.model, prompts, 1, 1, 4))
    for r in range(4):
        order = (a, b) if r % 2 == 0 else (b, a)
        for s in order:
            out = asyncio.run(serving.run_level(s.url, s.model, prompts, 1, 3, 32))
            res[s.label].append(out["tpot_s"]["p50"] * 1000)
            print(r, s.label, round(out["tpot_s"]["p50"] * 1000, 1), "ms", out["output_tokens_per_s"], "tok/s", flush=True)
finally:
    a.stop(); b.stop()
print({k: round(statistics.median(v), 1) for k, v in res.items()}, os.getloadavg())
