"""A model-free engine for the scheduler, cache and server tests: letters in, the next letters out.

Token ids 0-25 are the letters a-z, 26 is a space and 27 the end-of-sequence token. After token t
the engine produces (t + 1) % 26, except that it ends the sequence instead of producing 'z'. So
"ab" continues "cdefg...xy" and then stops. ``delay`` makes every step take that long.
"""

from __future__ import annotations

import time
from typing import Any, Iterator, Sequence

import numpy as np

from slipstream.engines.finishing import finish
from slipstream.engines.protocol import Completion, EngineInfo, SamplingParams
from slipstream.engines.stepping import StepOutput, batch_key

EOS = 27
VOCAB = 28


class FakeTokenizer:
    eos_token_ids = (EOS,)
    pad_token_id = EOS
    vocab_size = VOCAB
    chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    has_chat_template = True

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [26 if c == " " else (ord(c) - 97) % 26 for c in text.lower() if c == " " or c.isalpha()]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join(" " if i == 26 else "" if i == EOS else chr(97 + i) for i in ids)

    def tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.decode([i]) for i in ids]

    def chat(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        return self.encode(" ".join(m["content"] for m in messages) + " ")


def next_token(prev: int) -> int:
    nxt = (prev + 1) % 26
    return EOS if nxt == 25 else nxt


def continuation(prompt: Sequence[int], params: SamplingParams) -> list[int]:
    out, prev = [], prompt[-1]
    while len(out) < params.max_tokens:
        t = next_token(prev)
        if t == EOS:
            if params.ignore_eos or len(out) < params.min_tokens:
                t = 0
            else:
                break
        out.append(t)
        prev = t
    return out


class FakeStepper:
    def __init__(self, engine: "FakeEngine"):
        self.engine = engine
        self.seqs: dict[int, list[Any]] = {}  # id -> [prev, produced, params]
        self.pending: list[tuple[int, list[int], SamplingParams]] = []
        self.batch_sizes: list[int] = []

    @property
    def active(self) -> int:
        return len(self.seqs) + len(self.pending)

    def stats(self) -> dict[str, int]:
        return {"prefix_hits": 0, "prefix_misses": 0, "prefix_tokens_reused": 0}

    def add(self, seq_id: int, prompt: Sequence[int], params: SamplingParams) -> None:
        if not prompt:
            raise ValueError("empty prompt")
        self.pending.append((seq_id, list(prompt), params))

    def remove(self, seq_id: int) -> None:
        self.seqs.pop(seq_id, None)
        self.pending = [p for p in self.pending if p[0] != seq_id]

    def step(self) -> list[StepOutput]:
        time.sleep(self.engine.delay)
        for seq_id, prompt, params in self.pending:
            self.seqs[seq_id] = [prompt[-1], 0, params]
        self.pending = []
        self.batch_sizes.append(len(self.seqs))
        outs = []
        for seq_id, state in list(self.seqs.items()):
            prev, produced, params = state
            t = next_token(prev)
            if t == EOS and (params.ignore_eos or produced < params.min_tokens):
                t = 0
            if t == EOS:
                outs.append(StepOutput(seq_id, None, "stop"))
                del self.seqs[seq_id]
                continue
            state[0], state[1] = t, produced + 1
            done = state[1] >= params.max_tokens
            outs.append(StepOutput(seq_id, t, "length" if done else None))
            if done:
                del self.seqs[seq_id]
        return outs


class FakeEngine:
    name = "fake"

    def __init__(self, delay: float = 0.0, max_context: int = 128, rows: bool = True):
        self.delay, self.max_context = delay, max_context
        self.tokenizer = FakeTokenizer()
        self.calls: list[int] = []  # batch size of each generate / generate_rows call
        self.steppers: list[FakeStepper] = []
        if not rows:
            self.generate_rows = None  # type: ignore[assignment]

    def info(self) -> EngineInfo:
        return EngineInfo("fake", "cpu", "none", 1)

    def close(self) -> None:
        pass

    def stepper(self, **options: Any) -> FakeStepper:
        s = FakeStepper(self)
        self.steppers.append(s)
        return s

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        self.calls.append(len(prompts))
        longest = max(len(continuation(p, params)) for p in prompts)
        time.sleep(self.delay * longest)
        return [finish(self.tokenizer, len(p), continuation(p, params) + [EOS], params) for p in prompts]

    def generate_rows(self, prompts: Sequence[Sequence[int]], params: Sequence[SamplingParams],
                      on_token: Any) -> list[Completion]:
        assert len({batch_key(p) for p in params}) == 1
        self.calls.append(len(prompts))
        outs = [continuation(p, q) for p, q in zip(prompts, params)]
        done = [[] for _ in prompts]
        stopped = [False] * len(prompts)
        for step in range(max(len(o) for o in outs)):
            time.sleep(self.delay)
            for row, o in enumerate(outs):
                if step < len(o) and not stopped[row]:
                    done[row].append(o[step])
                    stopped[row] = bool(on_token(row, o[step]))
        return [finish(self.tokenizer, len(p), d + ([EOS] if len(d) == len(o) and len(o) < q.max_tokens else []), q)
                for p, d, o, q in zip(prompts, done, outs, params)]

    def stream(self, prompt: Sequence[int], params: SamplingParams) -> Iterator[int]:
        for t in continuation(prompt, params):
            time.sleep(self.delay)
            yield t

    def logprobs(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        out = []
        for s in sequences:
            lp = np.full((len(s), VOCAB), -10.0, dtype=np.float32)
            for i, t in enumerate(s):
                lp[i, next_token(t)] = -0.01
            out.append(lp)
        return out

    def score(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        return [lp[np.arange(len(s) - 1), list(s[1:])] for lp, s in zip(self.logprobs(sequences), sequences)]
