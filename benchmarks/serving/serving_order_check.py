"""Order check for benchmarks/serving/serving.py: the transformers server at max_batch_size 64 vs 1, one
stream, alternating which goes first, 4 rounds of 3 requests x 32 tokens. Median per-request TPOT p50 per
server (equal when the measurement order biases neither).

Usage:
    SLIPSTREAM_HOME=/tmp/demohome nice -n 10 .venv/bin/python benchmarks/serving/serving_order_check.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--logs", type=Path, default=Path("/tmp/slipstream-serving-order-check"))
    args = ap.parse_args()

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    args.logs.mkdir(parents=True, exist_ok=True)
    prompts = serving.load_prompts(80)
    a = serving.Server("b64", serving.slipstream_cmd(args.model, "transformers", 1, 64, []), env,
                       args.logs / "a.log", args.model)
    b = serving.Server("b1", serving.slipstream_cmd(args.model, "transformers", 1, 1, []), env,
                       args.logs / "b.log", args.model)
    res: dict[str, list[float]] = {"b64": [], "b1": []}
    try:
        for s in (a, b):
            asyncio.run(serving.run_level(s.url, s.model, prompts, 1, 1, 4))
        for r in range(4):
            for s in (a, b) if r % 2 == 0 else (b, a):
                out = asyncio.run(serving.run_level(s.url, s.model, prompts, 1, 3, 32))
                res[s.label].append(out["tpot_s"]["p50"] * 1000)
                print(r, s.label, round(out["tpot_s"]["p50"] * 1000, 1), "ms", out["output_tokens_per_s"], "tok/s",
                      flush=True)
    finally:
        a.stop()
        b.stop()
    print({k: round(statistics.median(v), 1) for k, v in res.items()}, os.getloadavg())


if __name__ == "__main__":
    main()
