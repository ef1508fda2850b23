"""The CTranslate2 seq2seq engine: a ``ctranslate2.Translator`` over a variant the CTranslate2 exporter wrote
from an encoder-decoder model (Marian, T5, BART, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from slipstream.engines.finishing import finish
from slipstream.engines.options import CTranslate2Options
from slipstream.engines.protocol import Completion, EngineInfo, SamplingParams
from slipstream.engines.sampling import StopRule
from slipstream.engines.seq2seq.model_config import check_sources, max_source_tokens, no_scoring, read_config
from slipstream.extras import require
from slipstream.tokenizer import Tokenizer


class CTranslate2Translator:
    name = "ctranslate2"

    def __init__(self, path: Path, *, device: str = "cpu", options: CTranslate2Options | None = None,
                 **changes: Any):
        """``options`` (:class:`~slipstream.engines.options.CTranslate2Options`), then ``changes`` by name."""
        o = CTranslate2Options.of(options, **changes)
        ct2 = require("ctranslate2", "ctranslate2", "the CTranslate2 engine")
        from slipstream.engines.ctranslate2 import saturating_int8
        from slipstream.exporters.ctranslate2 import check_runnable
        from slipstream.exporters.files import TOKENIZER_DIR

        path = Path(path)
        check_runnable(path, device, o.compute_type)
        self._ct2 = ct2
        self.options = o
        self.device = device
        self.batch_size = o.batch_size
        self.translator = ct2.Translator(str(path), device=device, compute_type=o.compute_type,
                                         intra_threads=o.threads or 0)
        self._tokenizer = Tokenizer.from_dir(path / TOKENIZER_DIR)
        self.max_context = o.max_context or max_source_tokens(read_config(path))
        self.saturating_int8 = device == "cpu" and saturating_int8(self.translator.compute_type)
        self._end = self._tokenizer.tokens(list(self._tokenizer.eos_token_ids)) or None
        self._unk = self._tokenizer.token_id(self._tokenizer.special.get("unk_token", "<unk>"))

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    def info(self) -> EngineInfo:
        import os

        threads = self.options.threads or (os.cpu_count() or 1)
        return EngineInfo("ctranslate2", self.device, self.translator.compute_type, threads,
                          {"ctranslate2": self._ct2.__version__, "task": "seq2seq",
                           "beam_size": self.options.beam_size, "saturating_int8": self.saturating_int8})

    def close(self) -> None:
        self.translator = None

    def score(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        raise no_scoring(self.name)

    def logprobs(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        raise no_scoring(self.name)

    # generation -----------------------------------------------------------------------------
    def _options(self, params: SamplingParams) -> dict[str, Any]:
        if params.seed is not None:
            self._ct2.set_random_seed(params.seed)
        greedy = params.greedy
        return dict(
            max_decoding_length=params.max_tokens,
            min_decoding_length=params.max_tokens if params.ignore_eos else params.min_tokens,
            sampling_topk=1 if greedy else (params.top_k or 0),
            sampling_topp=1.0 if greedy else params.top_p,
            sampling_temperature=1.0 if greedy else params.temperature,
            end_token=self._end,
            max_input_length=0,  # sources are checked against max_context, never cut silently
        )

    def _ids(self, tokens: Sequence[str]) -> list[int]:
        """Target token strings back to ids (the target vocabulary is the tokenizer's, less Marian's pad)."""
        ids = [self._tokenizer.token_id(t) for t in tokens]
        return [self._unk if i is None else i for i in ids]

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        check_sources(prompts, self.max_context)
        results = self.translator.translate_batch(
            [self._tokenizer.tokens(p) for p in prompts], max_batch_size=self.batch_size,
            beam_size=self.options.beam_size if params.greedy else 1, return_end_token=True,
            **self._options(params))
        return [finish(self._tokenizer, len(p), self._ids(r.hypotheses[0]), params) for p, r in zip(prompts, results)]

    def stream(self, prompt: Sequence[int], params: SamplingParams) -> Iterator[int]:
        """Tokens as the translator decodes them (greedy or sampled: a beam search cannot stream)."""
        check_sources([prompt], self.max_context)
        steps = self.translator.generate_tokens(self._tokenizer.tokens(prompt), **self._options(params))
        rule = StopRule(params, self._tokenizer.eos_token_ids)
        try:
            for step in steps:
                token = self._ids([step.token])[0]
                reason = rule.take(token)
                if reason == "stop":
                    return
                yield token
                if reason == "length":
                    return
        finally:
            close = getattr(steps, "close", None)
            if close:
                close()
