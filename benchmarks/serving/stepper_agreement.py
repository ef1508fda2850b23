"""Greedy tokens of the continuous batch against generate() on real models: 8 MT-bench chat prompts joining
at staggered steps, prefix reuse on, prompts fused into the decode step and prefilled apart.

Usage (prints one line per model and prefill mode):
    SLIPSTREAM_HOME=/tmp/home OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/serving/stepper_agreement.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))  # tests/engines/test_stepping.py


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "smollm2-135m-w8a8-sq0.8-gptq-keep-none"])
    args = ap.parse_args()

    from engines.test_stepping import run_staggered

    from slipstream.benchmark.workloads import load_prompts
    from slipstream.engines.loading import open_engine
    from slipstream.engines.protocol import SamplingParams

    for name in args.models:
        e = open_engine(name, engine="transformers", threads=1)
        prompts = [e.tokenizer.chat([{"role": "user", "content": p}]) for p in load_prompts("mt-bench", 8)]
        params = [SamplingParams(max_tokens=24)] * 8
        expected = [e.generate([p], q)[0].token_ids for p, q in zip(prompts, params)]
        for fused in (True, False):
            got, _ = run_staggered(e.stepper(prefix_cache_tokens=65536, fused_prefill=fused), prompts, params,
                                   joins=[0, 0, 1, 3, 3, 5, 8, 9])
            same = [got[i] == expected[i] for i in range(8)]
            first = [next((k for k, (a, b) in enumerate(zip(got[i], expected[i])) if a != b), None) for i in range(8)]
            print(name, "fused" if fused else "separate", sum(same), "/ 8 identical; first differences:", first)


if __name__ == "__main__":
    main()
