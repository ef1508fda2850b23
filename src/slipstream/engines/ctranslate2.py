"""The CTranslate2 engine: runs variants written by the CTranslate2 exporter."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from slipstream.engines.finishing import finish
from slipstream.engines.options import CTranslate2Options
from slipstream.engines.protocol import Completion, EngineInfo, SamplingParams
from slipstream.engines.sampling import StopRule
from slipstream.engines.stepping import TokenCallback, batch_key
from slipstream.tokenizer import Tokenizer
from slipstream.extras import require


class CTranslate2Engine:
    name = "ctranslate2"

    def __init__(self, path: Path, *, device: str = "cpu", options: CTranslate2Options | None = None, **changes: Any):
        """``options`` (:class:`~slipstream.engines.options.CTranslate2Options`), then ``changes`` by name."""
        o = CTranslate2Options.of(options, **changes)
        compute_type, threads = o.compute_type, o.threads
        ct2 = require("ctranslate2", "ctranslate2", "the CTranslate2 engine")
        from slipstream.exporters.ctranslate2 import check_runnable
        from slipstream.exporters.files import TOKENIZER_DIR

        path = Path(path)
        check_runnable(path, device, compute_type)
        self._ct2 = ct2
        self.options = o
        self.device = device
        self.batch_size = o.batch_size
        self.generator = ct2.Generator(str(path), device=device, compute_type=compute_type, intra_threads=threads or 0)
        self._threads = threads or 0
        self._tokenizer = Tokenizer.from_dir(path / TOKENIZER_DIR)
        self.max_context = o.max_context or _max_context(path / TOKENIZER_DIR)
        self.saturating_int8 = device == "cpu" and saturating_int8(self.generator.compute_type)
        if self.saturating_int8:
            import warnings

            warnings.warn(
                f"{path.name}: this CPU has no VNNI, so CTranslate2's default int8 kernels (oneDNN) add "
                "uint8 x int8 products in 16 bits, which saturate: expect a larger accuracy loss than on a "
                "VNNI CPU (SmolLM2-135M: +15.8% WikiText-2 perplexity, KL 0.11, against +3.7%, KL 0.03, "
                "with VNNI; CT2_USE_MKL=1 gives the VNNI figures here at about 8x the decode time; "
                "BENCHMARKS.md, 'CPUs without VNNI')", stacklevel=2)

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    def info(self) -> EngineInfo:
        import os

        threads = self._threads or (os.cpu_count() or 1)
        return EngineInfo("ctranslate2", self.device, self.generator.compute_type, threads,
                          {"ctranslate2": self._ct2.__version__, "saturating_int8": self.saturating_int8})

    def close(self) -> None:
        self.generator = None

    def _tokens(self, ids: Sequence[int]) -> list[str]:
        return self._tokenizer.tokens(ids)

    # scoring --------------------------------------------------------------------------------
    def logprobs(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for start in range(0, len(sequences), self.batch_size):
            batch = [list(s) for s in sequences[start : start + self.batch_size]]
            try:
                lp = np.asarray(self.generator.forward_batch(batch, return_log_probs=True))
            except ValueError as exc:
                if "current storage size" not in str(exc):
                    raise
                from slipstream.errors import Unsupported

                # CTranslate2 4.8's sliding-window layers (Gemma 3) size their buffers to the window in
                # forward_batch; generation past the window works, scoring a longer sequence at once does not
                limit = str(exc).rsplit(" ", 1)[-1]
                raise Unsupported(f"CTranslate2 {self._ct2.__version__} cannot score {max(map(len, batch))} tokens at "
                                  f"once with this model (its sliding-window layers hold {limit}); "
                                  f"evaluate with --window {limit} or less") from None
            out.extend(np.array(lp[i, : len(s)], dtype=np.float32) for i, s in enumerate(batch))
        return out

    def score(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for start in range(0, len(sequences), self.batch_size):
            batch = [self._tokens(s) for s in sequences[start : start + self.batch_size]]
            for r in self.generator.score_batch(batch):
                out.append(np.asarray(r.log_probs, dtype=np.float32))
        return out

    # generation -----------------------------------------------------------------------------
    def _options(self, params: SamplingParams) -> dict:
        if params.seed is not None:
            self._ct2.set_random_seed(params.seed)
        greedy = params.greedy
        return dict(
            max_length=params.max_tokens,
            min_length=params.max_tokens if params.ignore_eos else params.min_tokens,
            sampling_topk=1 if greedy else (params.top_k or 0),
            sampling_topp=1.0 if greedy else params.top_p,
            sampling_temperature=1.0 if greedy else params.temperature,
            end_token=list(self._tokenizer.eos_token_ids) or None,
            include_prompt_in_result=False,
        )

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        # With include_prompt_in_result=False, CTranslate2 forwards only the shortest prompt's length at
        # once and force-decodes the rest into the result; so each call gets prompts of one length.
        by_length: dict[int, list[int]] = {}
        for i, p in enumerate(prompts):
            by_length.setdefault(len(p), []).append(i)
        out: list[Completion | None] = [None] * len(prompts)
        for indices in by_length.values():
            results = self.generator.generate_batch(
                [self._tokens(prompts[i]) for i in indices],
                max_batch_size=self.batch_size,
                return_end_token=True,
                **self._options(params),
            )
            for i, r in zip(indices, results):
                out[i] = finish(self._tokenizer, len(prompts[i]), r.sequences_ids[0], params)
        return out  # type: ignore[return-value]

    def generate_rows(self, prompts: Sequence[Sequence[int]], params: Sequence[SamplingParams],
                      on_token: TokenCallback) -> list[Completion]:
        """One ``generate_batch`` call for the whole batch, reporting tokens through its step callback.

        CTranslate2 has no iteration-level API, so a server batches whole requests (dynamic batching).
        Prompts of different lengths are fine here: tokens past the shortest prompt are forced
        through the decoder and not reported by the callback. Sampling options are per call, so the
        rows must share :func:`~slipstream.engines.stepping.batch_key`; each row stops at its own
        ``max_tokens`` (or when ``on_token`` returns True).
        """
        first = params[0]
        if any(batch_key(p) != batch_key(first) for p in params):
            raise ValueError("generate_rows needs rows whose sampling params share batch_key()")
        rules = [StopRule(p, self._tokenizer.eos_token_ids) for p in params]

        def callback(step: Any) -> bool:
            row, token = step.batch_id, int(step.token_id)
            reason = rules[row].take(token)
            if reason == "stop":
                return True
            stop = bool(on_token(row, token))
            return stop or reason == "length"

        options = self._options(first.with_(max_tokens=max(p.max_tokens for p in params)))
        results = self.generator.generate_batch([self._tokens(p) for p in prompts], max_batch_size=0,
                                                return_end_token=True, callback=callback, **options)
        return [finish(self._tokenizer, len(p), r.sequences_ids[0][: rules[i].generated + 1], params[i])
                for i, (p, r) in enumerate(zip(prompts, results))]

    def stream(self, prompt: Sequence[int], params: SamplingParams) -> Iterator[int]:
        options = self._options(params)
        options.pop("include_prompt_in_result")
        steps = self.generator.generate_tokens(self._tokens(prompt), **options)
        rule = StopRule(params, self._tokenizer.eos_token_ids)
        try:
            for step in steps:
                if rule.take(int(step.token_id)) == "stop":
                    return
                yield int(step.token_id)
        finally:
            close = getattr(steps, "close", None)
            if close:
                close()


def _max_context(tokenizer_dir: Path) -> int:
    """The parent model's context length, from its config.json kept beside the tokenizer."""
    import json

    f = tokenizer_dir / "config.json"
    if f.exists():
        cfg = json.loads(f.read_text())
        for key in ("max_position_embeddings", "n_positions", "max_length"):
            if cfg.get(key):
                return int(cfg[key])
    return 2048


def saturating_int8(compute_type: str) -> bool:
    """int8 on an x86 CPU without VNNI through oneDNN: CTranslate2's backend on non-Intel CPUs, or
    wherever CT2_USE_MKL=0 (MKL, its default on Intel, does not saturate)."""
    import os
    import platform

    from slipstream.machine import cpu_vendor, has_int8_dot_product

    use_mkl = os.environ.get("CT2_USE_MKL")
    onednn = use_mkl == "0" or (use_mkl != "1" and cpu_vendor() != "GenuineIntel")
    return (compute_type.startswith("int8") and platform.machine() in ("x86_64", "AMD64")
            and not has_int8_dot_product() and onednn)
