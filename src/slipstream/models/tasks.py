"""What a model does: its task, read from its config at intake and kept in its manifest.

Techniques and engines declare the tasks they take (``TechniqueSpec.tasks``, ``engines.loading``), so a
pairing that cannot work (a CTranslate2 ``Generator`` for a BERT encoder, perplexity for an embedding
model) is refused in one line before anything loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from slipstream.errors import Unsupported

Task = Literal["causal-lm", "seq2seq", "embedding", "classification"]
TASKS: tuple[str, ...] = Task.__args__  # type: ignore[attr-defined]
ENCODER_TASKS = ("embedding", "classification")

# Encoder-only families (their bare ``*Model`` class is a sentence encoder's backbone).
_ENCODER_TYPES = frozenset({
    "bert", "distilbert", "roberta", "xlm-roberta", "camembert", "mpnet", "electra", "deberta", "deberta-v2",
    "albert", "nomic_bert", "modernbert", "new", "xlm", "ernie", "megatron-bert", "mobilebert", "squeezebert",
})


def task_from_config(config: dict[str, Any], sentence_transformers: bool = False) -> Task:
    """The task a transformers ``config.json`` describes.

    The head named in ``architectures`` decides (``...ForCausalLM``, ``...ForConditionalGeneration``,
    ``...ForSequenceClassification``, a bare ``...Model``); a config without one falls back on
    ``is_encoder_decoder`` and the model type. ``sentence_transformers``: the directory holds a
    sentence-transformers pipeline (``modules.json``), which makes an encoder an embedding model.
    """
    architectures = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    model_type = str(config.get("model_type", "")).lower()
    for arch in architectures:
        if arch.endswith(("ForCausalLM", "LMHeadModel")) and not config.get("is_encoder_decoder"):
            return "causal-lm"
        if arch.endswith(("ForConditionalGeneration", "MTModel", "ForSeq2SeqLM")) or (
            arch.endswith("Model") and config.get("is_encoder_decoder")
        ):
            return "seq2seq"
        if arch.endswith("ForSequenceClassification"):
            return "classification"
    if config.get("is_encoder_decoder"):
        return "seq2seq"
    if sentence_transformers or model_type in _ENCODER_TYPES:
        if any(a.endswith("ForSequenceClassification") for a in architectures):
            return "classification"
        return "embedding"
    return "causal-lm"


def detect(directory: Path) -> Task:
    """The task of the model in ``directory`` (a transformers directory, or an exported variant that keeps
    its transformers config under ``tokenizer/``)."""
    directory = Path(directory)
    for candidate in (directory / "config.json", directory / "tokenizer" / "config.json"):
        if candidate.exists():
            try:
                config = json.loads(candidate.read_text())
            except ValueError:
                continue
            if isinstance(config, dict) and ("architectures" in config or "model_type" in config):
                st = (directory / "modules.json").exists() or (directory / "tokenizer" / "modules.json").exists()
                return task_from_config(config, sentence_transformers=st)
    return "causal-lm"  # GGUF files and older variants: every model before tasks was a causal LM


def task_of(variant: Any) -> Task:
    """A store entry's task: what its manifest recorded at intake, else read from its files."""
    from slipstream.store.manifest import MANIFEST

    path = Path(variant.path)
    try:
        recorded = json.loads((path / MANIFEST).read_text()).get("extra", {}).get("task")
    except (OSError, ValueError):
        recorded = None
    return recorded if recorded in TASKS else detect(path)


def a(task: str) -> str:
    """``task`` with its indefinite article ("an embedding", "a seq2seq")."""
    return f"an {task}" if task[0] in "aeiou" else f"a {task}"


def auto_class(task: str) -> Any:
    """The transformers class that loads a model of ``task`` with its head."""
    import transformers

    return getattr(transformers, {"causal-lm": "AutoModelForCausalLM", "seq2seq": "AutoModelForSeq2SeqLM",
                                  "embedding": "AutoModel",
                                  "classification": "AutoModelForSequenceClassification"}[task])


def require_task(task: str, accepted: tuple[str, ...], what: str, name: str = "") -> None:
    """Refuse, in one line, ``what`` (a technique, an engine, a metric) on a model of another task."""
    if task not in accepted:
        subject = f"{name!r} is {a(task)} model" if name else f"{a(task)} model"
        raise Unsupported(f"{what} takes {' or '.join(accepted)} models; {subject}")
