"""The prompts the benchmarks compare greedy outputs on: WikiText-2 openings and chat questions.

Imported by the benchmark scripts (run as ``python benchmarks/NAME.py``, so this directory is on the path).
"""

from __future__ import annotations

from slipstream.evaluation.data import text_set

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
    lines = [ln for ln in text_set("wikitext2").splitlines() if len(ln.split()) > 40][:openings]
    prompts = [tokenizer.encode(" ".join(ln.split()[:24])) for ln in lines]
    if not tokenizer.has_chat_template:
        return prompts + [tokenizer.encode(f"Question: {q}\nAnswer:") for q in questions]
    return prompts + [tokenizer.chat([{"role": "user", "content": q}]) for q in questions]
