"""Generation tasks scored by metric: translation (BLEU, chrF via sacrebleu) and question answering
(exact match, token F1). Generation is greedy, through the engine's ``generate``."""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from typing import Sequence

from slipstream.engines.protocol import Engine, SamplingParams
from slipstream.evaluation.datasets import GenerationItem
from slipstream.extras import require
from slipstream.progress import Progress, or_null


def prompt_ids(engine: Engine, prompt: str, chat: bool | None) -> list[int]:
    """The prompt as a single user turn of the chat template (when the model has one and ``chat``
    is not False), or as plain text."""
    tok = engine.tokenizer
    if chat is not False and tok.has_chat_template:
        return tok.chat([{"role": "user", "content": prompt}])
    return tok.encode(prompt)


def generate_all(engine: Engine, items: Sequence[GenerationItem], *, max_new_tokens: int, stop: tuple[str, ...],
                 chat: bool | None, batch_size: int = 8, progress: Progress | None = None,
                 label: str = "generating") -> list[str]:
    params = SamplingParams(max_tokens=max_new_tokens, stop=stop)
    outputs: list[str] = []
    with or_null(progress).task(label, total=len(items)) as bar:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            done = engine.generate([prompt_ids(engine, it.prompt, chat) for it in chunk], params)
            outputs.extend(c.text.strip() for c in done)
            bar.advance(len(chunk))
    return outputs


def translation_metrics(hypotheses: list[str], references: list[str], n_bootstrap: int = 200) -> dict:
    sacrebleu = require("sacrebleu", "eval", "BLEU and chrF")
    from sacrebleu.metrics import BLEU, CHRF

    out: dict = {"items": len(hypotheses)}
    for name, metric in (("bleu", BLEU()), ("chrf", CHRF())):
        score = metric.corpus_score(hypotheses, [references], n_bootstrap=n_bootstrap if len(hypotheses) > 1 else 1)
        out[name] = float(score.score)
        ci = getattr(score, "_ci", None)
        out[f"{name}_ci95_halfwidth"] = float(ci) if ci is not None else float("nan")
    out["sacrebleu"] = sacrebleu.__version__
    return out


def _normalize(text: str) -> str:
    """SQuAD answer normalization: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, references: Sequence[str]) -> float:
    return float(any(_normalize(prediction) == _normalize(r) for r in references))


def token_f1(prediction: str, references: Sequence[str]) -> float:
    def f1(pred: str, ref: str) -> float:
        p, r = _normalize(pred).split(), _normalize(ref).split()
        if not p or not r:
            return float(p == r)
        common = sum((Counter(p) & Counter(r)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(p), common / len(r)
        return 2 * precision * recall / (precision + recall)

    return max(f1(prediction, r) for r in references)


def qa_metrics(predictions: list[str], items: Sequence[GenerationItem]) -> dict:
    em = [exact_match(p, it.references) for p, it in zip(predictions, items)]
    f1 = [token_f1(p, it.references) for p, it in zip(predictions, items)]
    return {"exact_match": _mean(em), "exact_match_stderr": _stderr(em), "f1": _mean(f1),
            "f1_stderr": _stderr(f1), "items": len(items)}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _stderr(values: list[float]) -> float:
    n = len(values)
    if n < 2:
        return float("nan")
    m = _mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1) / n)
