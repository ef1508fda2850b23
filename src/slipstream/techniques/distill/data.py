"""Training text for distillation: a bundled set, a file, or the teacher's own answers to a prompt set.

The order of samples is a pure function of (seed, sample number): each pass over the data is a fresh
seeded permutation. A resumed run therefore needs only its step count to see exactly the batches
an uninterrupted run would have seen. Teacher generations are made once and kept beside the
checkpoint, so a resumed run does not generate again.

WikiText-2 *test* is refused: it is what evaluation scores.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from slipstream.calibration import BUNDLED, EVALUATION_TEXTS, Calibration
from slipstream.errors import InvalidConfig, NotFound

PROMPT_SETS = {"vicuna": "prompts/vicuna.jsonl", "mt-bench": "prompts/mt-bench.jsonl"}


def check_source(source: str) -> None:
    if source in EVALUATION_TEXTS:
        raise InvalidConfig(f"distill: data {source!r} is evaluation text; use wikitext2-valid, a file or teacher:PROMPTS")
    if source.startswith("teacher:"):
        name = source[8:]
        if name not in PROMPT_SETS and not name.startswith("file:"):
            raise InvalidConfig(f"distill: unknown prompt set {name!r}; use one of {', '.join(PROMPT_SETS)} "
                                "or teacher:file:PATH (one prompt per line, or JSON lines with 'turns')")
        return
    if source not in BUNDLED and not source.startswith("file:"):
        raise InvalidConfig(f"distill: unknown data {source!r}; use {', '.join(BUNDLED)}, file:PATH or teacher:PROMPTS")


def prompts(source: str) -> list[str]:
    """The prompts of ``teacher:NAME`` (a bundled set) or ``teacher:file:PATH``."""
    name = source[8:]
    if name.startswith("file:"):
        path = Path(name[5:])
        if not path.exists():
            raise NotFound(f"prompt file {path}: no such file")
        lines = path.read_text(encoding="utf-8").splitlines()
    else:
        lines = (resources.files("slipstream") / "data" / PROMPT_SETS[name]).read_text(encoding="utf-8").splitlines()
    out = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        out.append(json.loads(line)["turns"][0] if line.startswith("{") else line)
    return out


def text_tokens(source: str, tokenizer: Any, limit: int) -> list[int]:
    """Up to ``limit`` tokens of a text source, read line by line."""
    ids: list[int] = []
    for line in Calibration(source, 1, 2).lines():
        if line.strip():
            ids.extend(tokenizer.encode(line, add_special_tokens=False))
            if len(ids) >= limit:
                break
    return ids


def teacher_tokens(source: str, teacher: Any, tokenizer: Any, cache: Path, max_new_tokens: int, seed: int,
                   progress: Any) -> list[int]:
    """The teacher's sampled answers to the prompt set, chat-formatted, one stream of tokens
    (prompt + answer + end of sequence, in turn). Cached in ``cache`` (written atomically)."""
    import torch

    if cache.exists():
        return json.loads(cache.read_text())["tokens"]
    questions = prompts(source)
    eos = tokenizer.eos_token_ids[0] if tokenizer.eos_token_ids else None
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    stream: list[int] = []
    with progress.task(f"teacher answering {len(questions)} prompts ({source})", total=len(questions)) as bar:
        for q in questions:
            ids = (tokenizer.chat([{"role": "user", "content": q}]) if tokenizer.has_chat_template
                   else tokenizer.encode(q))
            with torch.no_grad():
                out = teacher.generate(torch.tensor([ids], device=teacher.device), do_sample=True, top_p=0.95,
                                       temperature=0.8, max_new_tokens=max_new_tokens, pad_token_id=eos)
            stream.extend(out[0].tolist())
            if eos is not None and stream[-1] != eos:
                stream.append(eos)
            bar.advance()
    torch.random.set_rng_state(generator_state)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps({"source": source, "tokens": stream}))
    os.replace(tmp, cache)
    return stream


def chunks(stream: list[int], length: int, prefix: list[int]) -> Any:
    """Consecutive sequences of exactly ``length`` tokens (``prefix``, e.g. BOS, then text)."""
    import torch

    body = length - len(prefix)
    n = len(stream) // body
    if n == 0:
        raise InvalidConfig(f"distill: the training text has {len(stream)} tokens, fewer than one sequence of {length}")
    rows = [prefix + stream[i * body:(i + 1) * body] for i in range(n)]
    return torch.tensor(rows, dtype=torch.long)


def sample_index(k: int, n: int, seed: int) -> int:
    """Which of ``n`` sequences is sample number ``k``: a fresh seeded permutation per pass."""
    import torch

    epoch, offset = divmod(k, n)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return int(torch.randperm(n, generator=g)[offset])
