"""The evaluation suite: every task selectable by name.

Built in: ``wikitext2`` (perplexity + KL), ``arc_easy`` and ``arc_challenge`` (multiple choice,
acc/acc_norm), ``flores_en_de`` and ``flores_en_fr`` (translation, BLEU/chrF). From the user's
files: ``file:PATH`` (perplexity on any UTF-8 text), ``qa:PATH`` (question answering JSONL, exact
match and F1), and ``custom:SPEC`` (a JSONL file plus a YAML or JSON spec).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from slipstream.errors import InvalidConfig, NotFound
from slipstream.evaluation import datasets
from slipstream.evaluation.datasets import GenerationItem, MultipleChoiceItem

Kind = Literal["perplexity", "multiple_choice", "generation", "embedding", "classification"]
# The model tasks (slipstream.models.tasks) each kind of evaluation takes.
KIND_TAKES: dict[str, tuple[str, ...]] = {
    "perplexity": ("causal-lm",), "multiple_choice": ("causal-lm",), "generation": ("causal-lm", "seq2seq"),
    "embedding": ("embedding",), "classification": ("classification",),
}
LOWER_IS_BETTER = frozenset({"perplexity", "nll", "kl_mean", "kl_p99", "kl_max"})


@dataclass(frozen=True)
class Task:
    name: str
    kind: Kind
    metrics: tuple[str, ...]  # what it reports, the first being the headline metric
    description: str
    data_identity: str = ""  # hash of user-supplied data, so a changed file is not served from cache
    # multiple_choice: limit -> items; generation: limit -> items; perplexity: () -> text
    load: Callable[..., Any] = field(default=lambda *a: [], repr=False, compare=False)
    scorer: str = ""  # generation tasks: "translation" or "qa"
    options: dict[str, Any] = field(default_factory=dict, compare=False)  # chat, stop, max_new_tokens


def _flores(source: str, target: str) -> Task:
    src_name, tgt_name = datasets.FLORES_LANGS[source][1], datasets.FLORES_LANGS[target][1]

    def load(limit: int | None) -> list[GenerationItem]:
        return [GenerationItem(str(i), f"Translate this {src_name} sentence into {tgt_name}. Reply with the "
                               f"{tgt_name} translation only.\n\n{text}", (ref,),
                               # a seq2seq model reads the bare source (evaluation/translation.py)
                               {"source": text, "source_lang": src_name, "target_lang": tgt_name})
                for i, (text, ref) in enumerate(datasets.flores(source, target, limit))]

    return Task(f"flores_{source}_{target}", "generation", ("chrf", "bleu"),
                f"FLORES-200 devtest {src_name} -> {tgt_name}, BLEU and chrF (sacrebleu)", load=load,
                scorer="translation", options={"chat": None, "stop": ("\n",), "max_new_tokens": 128})


def _wikitext() -> Task:
    from slipstream.evaluation.data import text_set

    return Task("wikitext2", "perplexity", ("perplexity", "kl_mean", "top1_agreement"),
                "WikiText-2 test, sliding-window perplexity; KL and top-1 agreement vs the reference",
                load=lambda: text_set("wikitext2"))


def _embeddings() -> Task:
    from slipstream.evaluation.embeddings import sentences

    return Task("embeddings", "embedding", ("cosine_mean", "retrieval_top10", "cosine_min", "cosine_p5"),
                "FLORES-200 English and WikiText-2 sentences: cosine to the reference's embeddings, and the "
                "share of each sentence's 10 nearest neighbours both find", load=sentences)


def _classify_file(path: Path) -> Task:
    from slipstream.evaluation.embeddings import read_labelled

    return Task(f"classify:{path}", "classification", ("accuracy", "f1_macro", "label_agreement"),
                f"classification accuracy and macro F1 on {path.name}", _digest(path),
                load=lambda limit: read_labelled(path, limit))


BUILTIN: dict[str, Callable[[], Task]] = {
    "wikitext2": _wikitext,
    "arc_easy": lambda: Task("arc_easy", "multiple_choice", ("acc_norm", "acc"),
                             "AI2 ARC-Easy test (2,376 questions), log-likelihood acc / acc_norm",
                             load=lambda limit: datasets.arc("Easy", limit)),
    "arc_challenge": lambda: Task("arc_challenge", "multiple_choice", ("acc_norm", "acc"),
                                  "AI2 ARC-Challenge test (1,172 questions), log-likelihood acc / acc_norm",
                                  load=lambda limit: datasets.arc("Challenge", limit)),
    "flores_en_de": lambda: _flores("en", "de"),
    "flores_en_fr": lambda: _flores("en", "fr"),
    "embeddings": _embeddings,
}
PREFIXES = ("file:PATH", "qa:PATH", "classify:PATH", "custom:SPEC")


def known() -> list[str]:
    return [*BUILTIN, *PREFIXES]


def get_task(name: str) -> Task:
    if name in BUILTIN:
        return BUILTIN[name]()
    prefix, _, rest = name.partition(":")
    if rest and prefix == "file":
        return _text_file(Path(rest))
    if rest and prefix == "qa":
        return _qa_file(Path(rest))
    if rest and prefix == "classify":
        return _classify_file(Path(rest))
    if rest and prefix == "custom":
        return _custom(Path(rest))
    raise NotFound(f"unknown task {name!r}; known: {', '.join(known())}")


def _digest(path: Path) -> str:
    if not path.exists():
        raise NotFound(f"{path}: no such file")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _text_file(path: Path) -> Task:
    from slipstream.evaluation.data import read_text_file

    return Task(f"file:{path}", "perplexity", ("perplexity", "kl_mean", "top1_agreement"),
                f"perplexity on {path.name}", _digest(path), load=lambda: read_text_file(path))


def _qa_file(path: Path, template: str | None = None) -> Task:
    """JSONL with ``question``, optional ``context``, and ``answer`` (a string) or ``answers`` (a list)."""
    digest = _digest(path)

    def load(limit: int | None) -> list[GenerationItem]:
        items = []
        for number, r in datasets.read_jsonl(path, ("question",)):
            refs = r.get("answers", r.get("answer"))
            if refs is None:
                raise InvalidConfig(f"{path}:{number}: no field 'answer' or 'answers'")
            refs = tuple(refs) if isinstance(refs, list) else (str(refs),)
            prompt = (template or ("{context}\n\nQuestion: {question}\nAnswer with a few words only."
                                   if r.get("context") else "Question: {question}\nAnswer with a few words only."))
            items.append(GenerationItem(str(r.get("id", number)), _fill(prompt, r, path, number), refs))
            if limit is not None and len(items) >= limit:
                break
        return items

    return Task(f"qa:{path}", "generation", ("f1", "exact_match"), f"question answering on {path.name}",
                digest, load=load, scorer="qa", options={"chat": None, "stop": ("\n",), "max_new_tokens": 32})


def _fill(template: str, record: dict, path: Path, number: int) -> str:
    try:
        return template.format_map(record)
    except KeyError as exc:
        raise InvalidConfig(f"{path}:{number}: the prompt template needs field {exc.args[0]!r}") from None


CUSTOM_KEYS = {"name", "data", "type", "prompt", "choices", "answer", "reference", "metric", "chat", "stop",
               "max_new_tokens"}


def _custom(spec_path: Path) -> Task:
    """A user task: a YAML or JSON spec naming a JSONL file, a prompt template and how to score.

    multiple_choice: ``choices`` (field with a list of strings) and ``answer`` (field with the index
    or the text of the right choice); metric ``acc`` (reports acc and acc_norm).
    generation: ``reference`` (field with a string or list); metric ``exact_match``, ``f1``,
    ``bleu`` or ``chrf``.
    """
    if not spec_path.exists():
        raise NotFound(f"{spec_path}: no such task spec")
    try:
        if spec_path.suffix in (".yaml", ".yml"):
            import yaml

            spec = yaml.safe_load(spec_path.read_text())
        else:
            import json

            spec = json.loads(spec_path.read_text())
    except Exception as exc:
        raise InvalidConfig(f"{spec_path}: not valid {spec_path.suffix.lstrip('.').upper()} ({exc})") from None
    if not isinstance(spec, dict):
        raise InvalidConfig(f"{spec_path}: the spec must be a mapping")
    unknown = set(spec) - CUSTOM_KEYS
    if unknown:
        raise InvalidConfig(f"{spec_path}: unknown key(s) {', '.join(sorted(unknown))}; "
                            f"allowed: {', '.join(sorted(CUSTOM_KEYS))}")
    for key in ("data", "type", "prompt"):
        if key not in spec:
            raise InvalidConfig(f"{spec_path}: missing key {key!r}")
    data = (spec_path.parent / spec["data"]).resolve()
    digest = hashlib.sha256(_digest(data).encode() + spec_path.read_bytes()).hexdigest()
    name = spec.get("name", spec_path.stem)
    template = spec["prompt"]
    if spec["type"] == "multiple_choice":
        for key in ("choices", "answer"):
            if key not in spec:
                raise InvalidConfig(f"{spec_path}: a multiple_choice task needs {key!r}")

        def load_mc(limit: int | None) -> list[MultipleChoiceItem]:
            items = []
            for number, r in datasets.read_jsonl(data, (spec["choices"], spec["answer"])):
                choices = r[spec["choices"]]
                if not isinstance(choices, list) or not choices:
                    raise InvalidConfig(f"{data}:{number}: field {spec['choices']!r} must be a non-empty list")
                answer = r[spec["answer"]]
                index = answer if isinstance(answer, int) else (choices.index(answer) if answer in choices else -1)
                if not 0 <= index < len(choices):
                    raise InvalidConfig(f"{data}:{number}: answer {answer!r} is not one of the choices")
                items.append(MultipleChoiceItem(str(r.get("id", number)), _fill(template, r, data, number),
                                                tuple(str(c) for c in choices), index))
                if limit is not None and len(items) >= limit:
                    break
            return items

        return Task(f"custom:{name}", "multiple_choice", ("acc_norm", "acc"), f"user task {name}", digest,
                    load=load_mc)
    if spec["type"] == "generation":
        metric = spec.get("metric", "exact_match")
        if metric not in ("exact_match", "f1", "bleu", "chrf"):
            raise InvalidConfig(f"{spec_path}: metric {metric!r} is not one of exact_match, f1, bleu, chrf")
        if "reference" not in spec:
            raise InvalidConfig(f"{spec_path}: a generation task needs 'reference'")

        def load_gen(limit: int | None) -> list[GenerationItem]:
            items = []
            for number, r in datasets.read_jsonl(data, (spec["reference"],)):
                refs = r[spec["reference"]]
                refs = tuple(refs) if isinstance(refs, list) else (str(refs),)
                items.append(GenerationItem(str(r.get("id", number)), _fill(template, r, data, number), refs))
                if limit is not None and len(items) >= limit:
                    break
            return items

        scorer = "translation" if metric in ("bleu", "chrf") else "qa"
        metrics = (metric, "bleu" if metric == "chrf" else "chrf") if scorer == "translation" else \
            (metric, "f1" if metric == "exact_match" else "exact_match")
        stop = spec.get("stop", ["\n"])
        return Task(f"custom:{name}", "generation", metrics, f"user task {name}", digest, load=load_gen,
                    scorer=scorer, options={"chat": spec.get("chat"), "stop": tuple(stop),
                                            "max_new_tokens": int(spec.get("max_new_tokens", 64))})
    raise InvalidConfig(f"{spec_path}: type must be multiple_choice or generation, got {spec['type']!r}")
