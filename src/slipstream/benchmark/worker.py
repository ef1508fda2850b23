"""Runs one benchmark in a fresh process, so load time and peak memory belong to that variant alone.

Reads a JSON request from argv, prints JSON lines: ``{"event": "tick"}`` as work advances and one
``{"event": "result", ...}`` at the end (or ``{"event": "error", "message": ...}``).
"""

from __future__ import annotations

import json
import sys
import time


def emit(**payload) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def run(request: dict) -> dict:
    from slipstream.benchmark.latency import latency, throughput
    from slipstream.benchmark.workloads import load_prompts
    from slipstream.evaluation.generation import prompt_ids
    from slipstream.benchmark.memory import peak_gpu_bytes, peak_rss_bytes, reset_peak_rss, rss_bytes
    from slipstream.engines.loading import open_engine
    from slipstream.engines.protocol import SamplingParams
    from slipstream.evaluation.data import text_set
    from slipstream.store import Store

    s = request["settings"]
    store = Store(request["home"])
    variant = store.get(request["variant"])
    rss_before = rss_bytes()
    start = time.perf_counter()
    engine = open_engine(variant, engine=request.get("engine"), threads=s["threads"], device=s.get("device"),
                         store=store, options=s.get("engine_options") or {})
    load_s = time.perf_counter() - start
    rss_loaded, peak_loaded = rss_bytes(), peak_rss_bytes()
    separate = reset_peak_rss()  # from here on, the peak is that of generation alone
    emit(event="tick", stage="loaded")

    if hasattr(engine, "embed") and not hasattr(engine, "generate"):  # an encoder: sentences, not tokens
        from slipstream.benchmark import encoders

        seqs = encoders.sentences(engine)
        tick = lambda: emit(event="tick")  # noqa: E731
        lat = encoders.latency(engine, seqs, s["repeats"], s["warmup"], tick)
        tput = [encoders.throughput(engine, seqs, b, s["repeats"], tick) for b in s["batch_sizes"]]
        return {"kind": "encoder", "engine": engine.info().__dict__,
                "workload": {"name": "flores-en", "sentences": len(seqs)}, "load_s": load_s,
                "latency": lat, "throughput": tput,
                "memory": {"rss_before_load_bytes": rss_before, "rss_after_load_bytes": rss_loaded,
                           "peak_rss_load_bytes": peak_loaded,
                           "peak_rss_generate_bytes": peak_rss_bytes() if separate else None,
                           "peak_rss_bytes": max(peak_loaded, peak_rss_bytes()), "peak_gpu_bytes": None}}
    workload = s.get("workload", "fixed")
    if workload == "fixed":  # one prompt of exactly prompt_tokens tokens, exactly output_tokens generated
        prompts = [engine.tokenizer.encode(text_set("wikitext2")[:40_000])[: s["prompt_tokens"]]]
        params = SamplingParams(max_tokens=s["output_tokens"], ignore_eos=True)
    else:  # real requests: each prompt through the chat template, generation stops where the model stops
        prompts = [prompt_ids(engine, text, chat=None) for text in load_prompts(workload)]
        params = SamplingParams(max_tokens=s["output_tokens"])
    tick = lambda: emit(event="tick")  # noqa: E731
    lat = latency(engine, prompts, params, s["repeats"], s["warmup"], tick)
    tput = [throughput(engine, prompts, params, b, s["repeats"], tick) for b in s["batch_sizes"]]
    return {
        "engine": engine.info().__dict__,
        "workload": {"name": workload, "prompts": len(prompts)},
        "load_s": load_s,
        "latency": lat,
        "throughput": tput,
        "memory": {
            "rss_before_load_bytes": rss_before,
            "rss_after_load_bytes": rss_loaded,
            "peak_rss_load_bytes": peak_loaded,
            "peak_rss_generate_bytes": peak_rss_bytes() if separate else None,
            "peak_rss_bytes": max(peak_loaded, peak_rss_bytes()),
            "peak_gpu_bytes": peak_gpu_bytes(),
        },
    }


def main() -> None:
    from slipstream.lifetime import die_with_parent

    die_with_parent()  # a benchmark (or search) killed outright leaves no measuring process behind
    request = json.loads(sys.argv[1])
    try:
        result = run(request)
    except Exception as exc:  # reported to the parent, which raises it as a SlipstreamError
        emit(event="error", message=f"{type(exc).__name__}: {exc}")
        sys.exit(1)
    emit(event="result", result=result)


if __name__ == "__main__":
    main()
