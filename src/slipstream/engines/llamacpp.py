"""The llama.cpp engine (llama-cpp-python's low-level bindings): runs GGUF variants.

It works on token ids from the model's own tokenizer (``tokenizer/`` beside the GGUF), like every
engine. A batch of prompts runs as parallel sequences in one context (one ``llama_batch`` per step,
each prompt its own sequence id), which is how llama.cpp serves several requests at once; scoring
asks for the logits of every position. No PyTorch is imported.
"""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from slipstream.engines.finishing import finish, generate_by_steps, stream_by_steps, token_scores
from slipstream.engines.options import LlamaCppOptions
from slipstream.engines.protocol import Completion, EngineInfo, SamplingParams
from slipstream.engines.sampling import StopRule, log_softmax, pick
from slipstream.tokenizer import Tokenizer
from slipstream.errors import SlipstreamError
from slipstream.extras import require

_SILENCED: list = []  # keeps the no-op log callback alive


def _silence(llama_cpp) -> None:
    if not _SILENCED and not os.environ.get("SLIPSTREAM_LLAMACPP_VERBOSE"):
        callback = llama_cpp.llama_log_callback(lambda level, text, data: None)
        llama_cpp.llama_log_set(callback, ctypes.c_void_p())
        _SILENCED.append(callback)


class LlamaCppEngine:
    name = "llamacpp"

    def __init__(self, path: Path, *, device: str = "cpu", options: LlamaCppOptions | None = None, **changes: Any):
        """``options`` (:class:`~slipstream.engines.options.LlamaCppOptions`), then ``changes`` by name."""
        o = LlamaCppOptions.of(options, **changes)
        batch_size, context, flash_attention = o.batch_size, o.context, o.flash_attention
        from slipstream.errors import Unsupported
        from slipstream.exporters.files import TOKENIZER_DIR
        from slipstream.exporters.gguf import MODEL_FILE

        if device != "cpu":
            raise Unsupported(f"the llama.cpp engine here is a CPU build; device {device!r} is not available")
        lc = require("llama_cpp", "llamacpp", "the llama.cpp engine")
        _silence(lc)
        lc.llama_backend_init()
        self._lc = lc
        path = Path(path)
        self.path = path
        self.quantization = _stored_quantization(path)
        self._tokenizer = Tokenizer.from_dir(path / TOKENIZER_DIR)
        self.options = o
        self.device = device
        self.batch_size = batch_size
        self._threads = o.threads or (os.cpu_count() or 1)

        mparams = lc.llama_model_default_params()
        self._model = lc.llama_model_load_from_file(str(path / MODEL_FILE).encode(), mparams)
        if not self._model:
            raise SlipstreamError(f"llama.cpp could not load {path / MODEL_FILE}")
        self._vocab = lc.llama_model_get_vocab(self._model)
        self.n_vocab = int(lc.llama_vocab_n_tokens(self._vocab))
        trained = int(lc.llama_model_n_ctx_train(self._model))
        self.n_ctx = min(context, trained) if trained > 0 else context
        self.n_batch = 512
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = self.n_ctx
        cparams.n_batch = cparams.n_ubatch = self.n_batch
        cparams.n_seq_max = batch_size
        cparams.n_threads = cparams.n_threads_batch = self._threads
        cparams.kv_unified = True  # sequences share the n_ctx cells, so one long or many short fit
        cparams.swa_full = True  # sliding-window layers keep every cell: sequences can be cleared freely
        cparams.no_perf = True
        kv = o.kv_type if o.kv_type != "auto" else ("f32" if self.quantization == "F32" else "f16")
        cparams.type_k = cparams.type_v = lc.GGML_TYPE_F32 if kv == "f32" else lc.GGML_TYPE_F16
        if flash_attention is not None:
            cparams.flash_attn_type = (lc.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attention
                                       else lc.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        self._kv = kv
        self._ctx = lc.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            raise SlipstreamError(f"llama.cpp could not create a context for {path.name}")
        self._batch = lc.llama_batch_init(self.n_batch, 0, batch_size)
        self.max_context = self.n_ctx
        from slipstream.engines.prompt_lookup import LookupStats

        self.lookup_stats = LookupStats()  # prompt-lookup drafts and their acceptance, when it is on

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    def info(self) -> EngineInfo:
        buf = ctypes.create_string_buffer(256)
        self._lc.llama_model_desc(self._model, buf, len(buf))
        return EngineInfo("llamacpp", self.device, self.quantization or buf.value.decode(), self._threads,
                          {"llama_cpp_python": self._lc.__version__, "model": buf.value.decode(),
                           "kv_cache": self._kv, "n_ctx": self.n_ctx}
                          | ({"prompt_lookup": self.options.prompt_lookup} | self.lookup_stats.to_dict()
                             if self.options.prompt_lookup else {}))

    def close(self) -> None:
        lc = getattr(self, "_lc", None)
        if lc is None:
            return
        if getattr(self, "_batch", None) is not None:
            lc.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "_ctx", None):
            lc.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            lc.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # low level ------------------------------------------------------------------------------
    def _clear(self) -> None:
        self._lc.llama_memory_clear(self._lc.llama_get_memory(self._ctx), True)

    def _decode(self, items: list[tuple[int, int, int, bool]]) -> np.ndarray:
        """Decode (token, position, sequence, wants_logits) items, at most n_batch of them; return the
        logits of the flagged ones, in order, as an ``[n_flagged, vocab]`` array (a copy)."""
        b = self._batch
        for i, (tok, pos, seq, out) in enumerate(items):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = out
        b.n_tokens = len(items)
        code = self._lc.llama_decode(self._ctx, b)
        if code != 0:
            raise SlipstreamError(
                f"llama.cpp decode failed (code {code})" + ("; the sequences do not fit the context of "
                                                            f"{self.n_ctx} tokens" if code == 1 else ""))
        n_out = sum(1 for it in items if it[3])
        if not n_out:
            return np.zeros((0, self.n_vocab), dtype=np.float32)
        ptr = self._lc.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(ptr, shape=(n_out, self.n_vocab)).copy()

    def _run(self, items: list[tuple[int, int, int, bool]]) -> np.ndarray:
        """Decode any number of items in chunks of n_batch; logits of the flagged items, in order."""
        parts = [self._decode(items[i : i + self.n_batch]) for i in range(0, len(items), self.n_batch)]
        return np.concatenate(parts) if parts else np.zeros((0, self.n_vocab), dtype=np.float32)

    # scoring --------------------------------------------------------------------------------
    def logprobs(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        out = []
        for seq in sequences:
            self._clear()
            logits = self._run([(int(t), p, 0, True) for p, t in enumerate(seq)])
            out.append(log_softmax(logits))
        self._clear()
        return out

    def score(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        return token_scores(sequences, self.logprobs(sequences))

    # generation -----------------------------------------------------------------------------
    def _steps(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> Iterator[list[int | None]]:
        """Yield, per step, the token each sequence produced (None once it has finished)."""
        rng = np.random.default_rng(params.seed)
        rules = [StopRule(params, self._tokenizer.eos_token_ids) for _ in prompts]
        self._clear()
        try:
            items = [(int(t), p, s, p == len(prompt) - 1) for s, prompt in enumerate(prompts)
                     for p, t in enumerate(prompt)]
            logits = self._run(items)
            positions = [len(p) for p in prompts]
            active = list(range(len(prompts)))
            while True:
                chosen = {s: pick(row, params, rng, rules[s].banned) for s, row in zip(active, logits)}
                yield [chosen.get(s) for s in range(len(prompts))]
                active = [s for s in active if rules[s].take(chosen[s]) is None]
                if not active:
                    return
                logits = self._run([(chosen[s], positions[s], s, True) for s in active])
                for s in active:
                    positions[s] += 1
        finally:
            self._clear()

    def _lookup_tokens(self, prompt: Sequence[int], params: SamplingParams) -> Iterator[int]:
        """One greedy sequence with prompt-lookup drafts (:mod:`slipstream.engines.prompt_lookup`): a draft
        goes through one ``llama_decode`` with logits for every position, and a rejected tail is removed from
        the sequence's memory (``llama_memory_seq_rm``)."""
        from slipstream.engines.prompt_lookup import decode

        position = [len(prompt)]
        memory = self._lc.llama_get_memory(self._ctx)

        def forward(tokens: list[int]) -> np.ndarray:
            rows = self._run([(t, position[0] + i, 0, True) for i, t in enumerate(tokens)])
            position[0] += len(tokens)
            return rows

        def rollback(length: int) -> None:
            self._lc.llama_memory_seq_rm(memory, 0, length, -1)
            position[0] = length

        self._clear()
        try:
            first = self._run([(int(t), p, 0, p == len(prompt) - 1) for p, t in enumerate(prompt)])[0]
            o = self.options
            yield from decode(first, forward, rollback, lambda row, banned: pick(row, params, None, banned),
                              prompt, params, self._tokenizer.eos_token_ids, o.prompt_lookup,
                              o.prompt_lookup_ngram, self.lookup_stats)
        finally:
            self._clear()

    def _lookup(self, params: SamplingParams) -> bool:
        return bool(self.options.prompt_lookup) and params.greedy

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        if self._lookup(params):  # one sequence at a time: each draft is checked against its own context
            return [finish(self._tokenizer, len(p), list(self._lookup_tokens(p, params)), params) for p in prompts]
        return generate_by_steps(self._steps, self._tokenizer, prompts, params, self.batch_size)

    def stream(self, prompt: Sequence[int], params: SamplingParams) -> Iterator[int]:
        if self._lookup(params):
            from slipstream.engines.prompt_lookup import until_stop

            yield from until_stop(self._lookup_tokens(prompt, params), params, self._tokenizer.eos_token_ids)
            return
        yield from stream_by_steps(self._steps, self._tokenizer, prompt, params)


def _stored_quantization(path: Path) -> str | None:
    manifest = path / "slipstream.json"
    if manifest.exists():
        return (json.loads(manifest.read_text()).get("technique") or {}).get("quantization")
    return None
