"""Issue 29's speed targets for the search's pick, measured side by side in one run on SmolLM2-135M-Instruct at
batch 1, 64 new tokens after a 128-token prompt:

- the pick decodes at least 6x as fast as transformers' own ``generate`` in float32 at its best thread count;
- it is ahead of llama.cpp's best Q8_0 figure on this machine (llama.cpp driven directly through its Python
  binding, one token per ``eval``, greedy, at its best thread count);
- it reaches at least 70% of the memory-bandwidth limit for the bytes it reads per token (this machine's streaming
  read bandwidth at the pick's thread count, measured once and cached in ``$SLIPSTREAM_HOME/roofline.json``).

Every contestant runs at 1 thread and at every core; the thread counts and the contestants are interleaved within
each round, and each figure is the median over rounds. Decode speed is (64 - 1) / (time for 64 tokens - time to
the first), so prefill is left out for all of them alike. ``--variants`` names the pick first (a store variant,
served through slipstream's engine for its format), then any others to time beside it; ``smollm2-135m-gguf-q8_0``
is made if missing.

Usage (writes benchmarks/results/<machine>/speed_targets.json; about 5 minutes on 2 cores):
    .venv/bin/python benchmarks/techniques/speed_targets.py --variants smollm2-135m-gguf-q8_0 [more ...] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common import result_path, write_json  # noqa: E402

MODEL = "smollm2-135m"
Q8 = f"{MODEL}-gguf-q8_0"
PROMPT, NEW = 128, 64


def prompt_ids(tokenizer) -> list[int]:
    """The first 128 tokens of WikiText-2's test text: real text, the same ids for every contestant."""
    from slipstream.evaluation.data import text_set

    return tokenizer.encode(text_set("wikitext2"))[:PROMPT]


class Transformers:
    """transformers' own ``generate``, float32, greedy, EOS ignored (``min_new_tokens``)."""

    def __init__(self, path: Path):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(path, dtype="float32").eval()

    def decode_rate(self, ids: list[int], threads: int) -> float:
        import torch

        torch.set_num_threads(threads)
        x = torch.tensor([ids])

        def run(n: int) -> float:
            start = time.perf_counter()
            with torch.inference_mode():
                self.model.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                    attention_mask=torch.ones_like(x), pad_token_id=0)
            return time.perf_counter() - start

        run(2)  # warm-up at this thread count
        return (NEW - 1) / (run(NEW) - run(1))


class LlamaCpp:
    """llama.cpp through its binding, nothing of slipstream's in the loop: one ``eval`` per token, greedy argmax."""

    def __init__(self, gguf: Path):
        self.gguf = gguf
        self.models: dict[int, object] = {}

    def _model(self, threads: int):
        import llama_cpp

        if threads not in self.models:
            self.models[threads] = llama_cpp.Llama(str(self.gguf), n_ctx=PROMPT + NEW + 8, n_threads=threads,
                                                   n_threads_batch=threads, verbose=False)
        return self.models[threads]

    def decode_rate(self, ids: list[int], threads: int) -> float:
        import numpy as np

        llm = self._model(threads)

        def run(n: int) -> float:
            llm.reset()
            start = time.perf_counter()
            llm.eval(ids)
            for _ in range(n - 1):
                llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
            return time.perf_counter() - start

        run(2)
        return (NEW - 1) / (run(NEW) - run(1))


class Slipstream:
    """A store variant on slipstream's engine for its format (the pick as ``serve`` would run it)."""

    def __init__(self, name: str):
        self.name, self.engines = name, {}

    def decode_rate(self, ids: list[int], threads: int) -> float:
        from slipstream.benchmark.latency import time_stream
        from slipstream.engines.loading import open_engine
        from slipstream.engines.protocol import SamplingParams

        if threads not in self.engines:
            self.engines[threads] = open_engine(self.name, threads=threads)
        engine = self.engines[threads]
        params = SamplingParams(max_tokens=NEW, min_tokens=NEW, ignore_eos=True, temperature=0.0)
        time_stream(engine, ids, params)
        return time_stream(engine, ids, params).decode_tokens_per_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", required=True, help="the search's pick first, then others to time")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=result_path("speed_targets.json"))
    args = ap.parse_args()

    from slipstream.benchmark.roofline import machine_peaks, roofline, token_cost
    from slipstream.machine import describe_machine
    from slipstream.models.intake import import_model
    from slipstream.pipeline import optimize
    from slipstream.report.build import architecture_config
    from slipstream.store import Store
    from slipstream.tokenizer import Tokenizer

    store = Store()
    if not store.exists(MODEL):
        import_model(MODEL, MODEL, store=store)
    if not store.exists(Q8):
        optimize(MODEL, "gguf", {"quantization": "Q8_0"}, name=Q8, store=store)
    original = store.get(MODEL)
    ids = prompt_ids(Tokenizer.from_dir(Path(original.path)))
    cores = os.cpu_count() or 1
    thread_counts = sorted({1, cores})

    contestants = {"transformers float32 generate": Transformers(Path(original.path)),
                   "llama.cpp Q8_0": LlamaCpp(next(Path(store.get(Q8).path).glob("*.gguf")))}
    for name in args.variants:
        contestants[name] = Slipstream(name)
    rates: dict[str, dict[int, list[float]]] = {c: {t: [] for t in thread_counts} for c in contestants}
    for r in range(args.rounds):
        order = list(contestants) if r % 2 == 0 else list(reversed(contestants))
        for c in order:
            for t in thread_counts:
                rates[c][t].append(contestants[c].decode_rate(ids, t))
        print(f"round {r + 1}: " + ", ".join(f"{c} {max(statistics.median(v[-1:]) for v in rates[c].values()):.1f}"
                                             for c in contestants), flush=True)

    def best(c: str) -> tuple[int, float]:
        t = max(thread_counts, key=lambda t: statistics.median(rates[c][t]))
        return t, statistics.median(rates[c][t])

    hf_t, hf = best("transformers float32 generate")
    q8_t, q8 = best("llama.cpp Q8_0")
    rows = {}
    for c in contestants:
        t, rate = best(c)
        row = {"threads": t, "decode_tokens_per_s": rate,
               "by_threads": {str(k): {"median": statistics.median(v), "rounds": v} for k, v in rates[c].items()},
               "x_transformers": rate / hf, "x_llamacpp_q8_0": rate / q8}
        if c in args.variants:
            record = store.get(c)
            config = architecture_config(record)
            kv = 2 if record.format == "gguf" else 4
            cost = token_cost(record.path, record.format, config, PROMPT + NEW // 2, kv, record.parameters)
            row["roofline"] = roofline(rate, cost, machine_peaks(store.home, t))
        rows[c] = row
    pick = args.variants[0]
    p = rows[pick]
    targets = {"x_transformers_at_least_6": p["x_transformers"] >= 6,
               "ahead_of_llamacpp_q8_0": p["x_llamacpp_q8_0"] > 1,
               "bandwidth_share_at_least_0.7": p["roofline"]["memory_bound_tokens_per_s"] and
               p["decode_tokens_per_s"] / p["roofline"]["memory_bound_tokens_per_s"] >= 0.7}
    record = {"machine": describe_machine(), "model": MODEL, "pick": pick, "prompt_tokens": PROMPT,
              "new_tokens": NEW, "rounds": args.rounds, "thread_counts": thread_counts,
              "baselines": {"transformers": {"threads": hf_t, "decode_tokens_per_s": hf},
                            "llamacpp_q8_0": {"threads": q8_t, "decode_tokens_per_s": q8}},
              "rows": rows, "targets": targets}
    write_json(args.out, record)
    for c, row in rows.items():
        share = row.get("roofline", {})
        extra = (f", {row['decode_tokens_per_s'] / share['memory_bound_tokens_per_s']:.0%} of the bandwidth limit "
                 f"({share['bytes_per_token'] / 1e6:.0f} MB/token)") if share else ""
        print(f"{c}: {row['decode_tokens_per_s']:.1f} tok/s at {row['threads']} thread(s), "
              f"{row['x_transformers']:.2f}x transformers, {row['x_llamacpp_q8_0']:.2f}x llama.cpp Q8_0{extra}")
    print("targets:", targets)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
