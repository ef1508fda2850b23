"""Encoder benchmarks: sentences per second one at a time (each sentence's latency) and in batches, embedded
or, for a classifier, classified.

The workload is real sentences (FLORES-200 devtest English, cycled), so lengths vary as a search or RAG
stack's queries and passages do; every engine embeds the same token ids.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from slipstream.benchmark.stats import percentiles, summary


def sentences(engine: Any, count: int = 256) -> list[list[int]]:
    from slipstream.evaluation import datasets

    texts = [en for en, _ in datasets.flores("en", "de", count)]
    return engine.encode_texts(texts)


def _run(engine: Any) -> Any:
    """What the model is for: a classifier's logits, else its embeddings."""
    return engine.classify if getattr(engine, "task", "embedding") == "classification" else engine.embed


def latency(engine: Any, seqs: Sequence[Sequence[int]], repeats: int, warmup: int,
            tick: Callable[[], None] = lambda: None, per_repeat: int = 16) -> dict[str, Any]:
    """Each of ``repeats x per_repeat`` sentences embedded alone: its latency, and sentences per second."""
    run = _run(engine)
    for i in range(warmup * per_repeat):
        run([seqs[i % len(seqs)]])
    times, rates = [], []
    for r in range(repeats):
        start_r = time.perf_counter()
        for i in range(per_repeat):
            seq = seqs[(r * per_repeat + i) % len(seqs)]
            start = time.perf_counter()
            run([seq])
            times.append(time.perf_counter() - start)
        rates.append(per_repeat / (time.perf_counter() - start_r))
        tick()
    return {"latency_s": percentiles(times), "sentences_per_s": summary(rates),
            "mean_tokens": round(sum(map(len, seqs)) / len(seqs), 1)}


def throughput(engine: Any, seqs: Sequence[Sequence[int]], batch_size: int, repeats: int,
               tick: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Sentences per second embedding ``batch_size`` sentences per call."""
    run = _run(engine)
    run([list(s) for s in seqs[:batch_size]])  # warm-up at this shape
    rates, seconds = [], []
    for r in range(repeats):
        batch = [list(seqs[(r * batch_size + i) % len(seqs)]) for i in range(batch_size)]
        start = time.perf_counter()
        run(batch)
        elapsed = time.perf_counter() - start
        rates.append(batch_size / elapsed)
        seconds.append(elapsed)
        tick()
    return {"batch_size": batch_size, "sentences_per_s": summary(rates), "seconds": summary(seconds)}
