"""How far an encoder variant moved from its original: the embeddings' cosine agreement, the nearest
neighbours they find, and, with labelled data, classification accuracy and F1.

- ``embeddings`` (built in): real sentences (FLORES-200 devtest English, then WikiText-2 test lines of six
  words or more), embedded by the variant and by the reference. ``cosine_*``: the cosine between each
  sentence's two vectors (mean, minimum, 5th percentile). ``retrieval_top10``: every sentence queries the
  others; the share of its ten nearest neighbours (by cosine) that the variant's vectors and the reference's
  have in common, averaged (1.0: the same neighbours found). The reference against itself scores 1.0 on
  all of them, so each works as a gate with a relative drop (``embeddings.cosine_mean=1%``: mean cosine at
  least 0.99).
- ``classify:PATH`` (a JSONL file of ``{"text": ..., "label": ...}``): accuracy and macro F1 against the
  labels, and ``label_agreement`` with the reference's predictions. Labels are the model's own names
  (``id2label``) or their indices.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from slipstream.errors import InvalidConfig, NotFound

DEFAULT_SENTENCES = 512
NEIGHBOURS = 10


def sentences(limit: int | None = None) -> list[str]:
    """FLORES-200 devtest English sentences, then WikiText-2 test lines of six words or more."""
    from slipstream.evaluation import datasets
    from slipstream.evaluation.data import text_set

    limit = limit or DEFAULT_SENTENCES
    out = [en for en, _ in datasets.flores("en", "de", None)]
    if len(out) < limit:
        for line in text_set("wikitext2").splitlines():
            line = line.strip()
            if len(line.split()) >= 6 and not line.startswith("="):
                out.append(line)
                if len(out) >= limit:
                    break
    return out[:limit]


def cosine_agreement(got: np.ndarray, want: np.ndarray) -> dict[str, float]:
    cos = (got * want).sum(1) / np.clip(np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1), 1e-12, None)
    return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
            "cosine_p5": float(np.percentile(cos, 5))}


def neighbours(vectors: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """Each row's ``k`` nearest other rows by cosine, ``[n, k]`` indices."""
    unit = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    k = min(k, len(vectors) - 1)
    return np.argpartition(-sims, k - 1, axis=1)[:, :k]


def retrieval_agreement(got: np.ndarray, want: np.ndarray, k: int = NEIGHBOURS) -> float:
    """Mean share of each query's ``k`` nearest neighbours that both sets of vectors find."""
    a, b = neighbours(got, k), neighbours(want, k)
    return float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b)]))


def embedding_metrics(got: np.ndarray, want: np.ndarray) -> dict[str, float]:
    return cosine_agreement(got, want) | {f"retrieval_top{NEIGHBOURS}": retrieval_agreement(got, want)}


SELF = {"cosine_mean": 1.0, "cosine_min": 1.0, "cosine_p5": 1.0, f"retrieval_top{NEIGHBOURS}": 1.0}


# --- classification ---------------------------------------------------------------------------------

def read_labelled(path: Path, limit: int | None = None) -> list[tuple[str, str]]:
    """(text, label) pairs from a JSONL file; a line without both is refused with its number."""
    if not path.exists():
        raise NotFound(f"{path}: no such file")
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise InvalidConfig(f"{path}:{number}: not JSON ({exc})") from None
        if not isinstance(record, dict) or "text" not in record or "label" not in record:
            raise InvalidConfig(f"{path}:{number}: expected an object with \"text\" and \"label\"")
        out.append((str(record["text"]), str(record["label"])))
        if limit and len(out) >= limit:
            break
    if not out:
        raise InvalidConfig(f"{path}: no labelled lines")
    return out


def predicted_labels(logits: np.ndarray, id2label: dict[Any, str]) -> list[str]:
    names = {int(k): str(v) for k, v in (id2label or {}).items()}
    return [names.get(int(i), str(int(i))) for i in logits.argmax(1)]


def classification_metrics(predicted: Sequence[str], gold: Sequence[str], id2label: dict[Any, str]) -> dict[str, float]:
    """Accuracy and macro F1; a gold label may be the model's label name or its index."""
    names = {str(k): str(v) for k, v in (id2label or {}).items()}
    gold = [names.get(g, g) for g in gold]
    labels = sorted(set(gold) | set(predicted))
    f1s = []
    for label in labels:
        tp = sum(p == label and g == label for p, g in zip(predicted, gold))
        fp = sum(p == label and g != label for p, g in zip(predicted, gold))
        fn = sum(p != label and g == label for p, g in zip(predicted, gold))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
    return {"accuracy": float(np.mean([p == g for p, g in zip(predicted, gold)])), "f1_macro": float(np.mean(f1s))}


# --- one pass: the reference and the variants on the same inputs --------------------------------------

def score(kind: str, items: list[Any], engines: list[Any], reference: Any | None, progress: Any,
          label: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Metrics of each engine against ``reference`` (an engine, or None: the first engine is compared with
    nothing and reports only what needs no reference); returns (per engine, the reference's own)."""
    texts = [it if isinstance(it, str) else it[0] for it in items]
    every = [*engines, *([reference] if reference is not None else [])]
    ids = every[0].encode_texts(texts)
    for engine in every[1:]:
        if engine.encode_texts(texts[:8]) != ids[:8]:
            raise InvalidConfig(f"{label}: the models tokenize differently; compare variants of one model")
    run = (lambda e: e.embed(ids)) if kind == "embedding" else (lambda e: e.classify(ids))
    with progress.task(label, total=len(every)) as bar:
        outputs = []
        for engine in every:
            outputs.append(run(engine))
            bar.advance()
    ref_out = outputs[-1] if reference is not None else None
    results = []
    for engine, out in zip(engines, outputs):
        if kind == "embedding":
            metrics = embedding_metrics(out, ref_out) if ref_out is not None else {}
            metrics |= {"sentences": len(texts), "dimensions": int(out.shape[1])}
        else:
            id2label = engine.config.get("id2label") or {}
            predicted = predicted_labels(out, id2label)
            metrics = classification_metrics(predicted, [g for _, g in items], id2label) | {"items": len(items)}
            if ref_out is not None:
                ref_pred = predicted_labels(ref_out, id2label)
                metrics["label_agreement"] = float(np.mean([a == b for a, b in zip(predicted, ref_pred)]))
        results.append(metrics)
    ref_metrics = None
    if reference is not None:
        if kind == "embedding":
            ref_metrics = dict(SELF) | {"sentences": len(texts), "dimensions": int(ref_out.shape[1])}
        else:
            id2label = reference.config.get("id2label") or {}
            ref_metrics = classification_metrics(predicted_labels(ref_out, id2label), [g for _, g in items],
                                                 id2label) | {"items": len(items), "label_agreement": 1.0}
    return results, ref_metrics
