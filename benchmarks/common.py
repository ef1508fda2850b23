"""What the benchmark scripts share: where a result file goes (``benchmarks/results/<machine>/``), how it is
written, the prompts greedy outputs are compared on, and how two runs' outputs are compared.

The scripts run as ``python benchmarks/<group>/<script>.py``; each puts ``benchmarks/`` on ``sys.path``
first and imports this module as ``common``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine_name(machine: dict | None = None) -> str:
    """The folder under ``results/`` for a machine as ``slipstream.machine.describe_machine()`` records
    it: ``zen4`` (AMD with AVX-512), ``zen3`` (AMD without), ``xeon-amx`` (Intel with AMX), ``xeon``
    (other Intel), ``unknown`` otherwise."""
    if machine is None:
        from slipstream.machine import describe_machine

        machine = describe_machine()
    cpu, flags = str(machine.get("cpu") or ""), set(machine.get("cpu_flags") or ())
    if "AMD" in cpu:
        return "zen4" if "avx512f" in flags else "zen3"
    if "Intel" in cpu:
        return "xeon-amx" if flags & {"amx_int8", "amx_bf16"} else "xeon"
    return "unknown"


def results_dir() -> Path:
    """This machine's folder of ``results/``."""
    return RESULTS / machine_name()


def result_path(name: str) -> Path:
    """Where a script writes ``name`` by default: in this machine's folder of ``results/``."""
    return results_dir() / name


def write_json(path: Path, record: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str))


# --- greedy outputs -------------------------------------------------------------------------------

CHAT = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in two sentences.",
    "List three prime numbers greater than 10.",
    "How do I reverse a list in Python?",
    "Give me a synonym for 'happy'.",
    "What causes the seasons on Earth?",
    "Translate 'good morning' into French.",
]


def greedy_prompts(tokenizer, openings: int, questions: list[str] = CHAT) -> list[list[int]]:
    """The first 24 words of the first ``openings`` WikiText-2 test lines longer than 40 words, then
    each question through the model's chat template (a base model without one, such as Gemma-3-270m:
    ``Question: ...`` / ``Answer:`` as plain text)."""
    from slipstream.evaluation.data import text_set

    lines = [ln for ln in text_set("wikitext2").splitlines() if len(ln.split()) > 40][:openings]
    prompts = [tokenizer.encode(" ".join(ln.split()[:24])) for ln in lines]
    if not tokenizer.has_chat_template:
        return prompts + [tokenizer.encode(f"Question: {q}\nAnswer:") for q in questions]
    return prompts + [tokenizer.chat([{"role": "user", "content": q}]) for q in questions]


def first_divergence(a: list[int], b: list[int]) -> int | None:
    """The first position where two token sequences differ (the shorter one's length where one is a
    prefix of the other); None where they are identical."""
    n = next((i for i, (s, t) in enumerate(zip(a, b)) if s != t), None)
    if n is None and len(a) != len(b):
        n = min(len(a), len(b))
    return n


# --- distributions --------------------------------------------------------------------------------

def kl_top1(reference: list, other: list) -> tuple[float, float]:
    """Mean KL divergence from ``reference`` to ``other`` and top-1 agreement, over lists of per-token
    log-probability arrays (tokens x vocabulary)."""
    import numpy as np

    kls, agree = [], []
    for a, b in zip(reference, other):
        kls.append((np.exp(a) * (a - b)).sum(-1))
        agree.append(a.argmax(-1) == b.argmax(-1))
    return float(np.concatenate(kls).mean()), float(np.concatenate(agree).mean())


def float_reference(fp32_name: str, src_name: str | None, tokens: int, window: int) -> tuple:
    """(store, the float32 variant, its checkpoint's path, the sequences, their log-probabilities): the
    first ``tokens`` WikiText-2 test tokens in windows of ``window``, through the float32 ONNX graph."""
    from slipstream.engines.onnxruntime import OnnxRuntimeEngine
    from slipstream.evaluation.data import text_set
    from slipstream.store import Store

    store = Store()
    fp32 = store.get(fp32_name)
    src = Path(store.get(src_name or fp32.parent).path)
    reference = OnnxRuntimeEngine(Path(fp32.path), threads=1)
    ids = reference.tokenizer.encode(text_set("wikitext2"))[:tokens]
    seqs = [ids[i : i + window] for i in range(0, len(ids), window)]
    return store, fp32, src, seqs, reference.logprobs(seqs)


# --- variants the serving benchmarks make for themselves ------------------------------------------

def ensure_ct2_int8(name: str, model: str = "smollm2-135m") -> None:
    """``name``: a CTranslate2 int8 variant of the bundled ``model``, made (and the model imported) if the
    store lacks it, so a serving benchmark runs on a fresh store."""
    from slipstream.models.intake import import_model
    from slipstream.pipeline import optimize
    from slipstream.store import Store

    store = Store()
    if store.exists(name):
        return
    if not store.exists(model):
        import_model(model, model, store=store)
    print(f"making {name} (ctranslate2 int8) from {model}", flush=True)
    optimize(model, "ctranslate2", {"quantization": "int8"}, name=name, store=store)
