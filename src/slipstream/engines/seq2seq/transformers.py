"""The transformers (PyTorch) seq2seq engine: ``AutoModelForSeq2SeqLM.generate``, the reference the
CTranslate2 translator is checked against."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from slipstream.engines.finishing import finish
from slipstream.engines.options import TransformersOptions
from slipstream.engines.protocol import Completion, EngineInfo, SamplingParams
from slipstream.engines.sampling import StopRule, pick_torch
from slipstream.engines.seq2seq.model_config import (check_sources, max_source_tokens, never_generated,
                                                      no_scoring, read_config)
from slipstream.errors import Unsupported
from slipstream.extras import require
from slipstream.tokenizer import Tokenizer


class TransformersSeq2Seq:
    name = "transformers"

    def __init__(self, path: Path, *, device: str = "cpu", options: TransformersOptions | None = None,
                 trust_remote_code: bool = False, **changes: Any):
        """``options`` (:class:`~slipstream.engines.options.TransformersOptions`; ``dtype``, ``threads``,
        ``batch_size`` and ``beam_size`` apply here), then ``changes`` to them by name."""
        o = TransformersOptions.of(options, **changes)
        torch = require("torch", "core", "the transformers engine")
        from transformers import AutoModelForSeq2SeqLM, GenerationConfig

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise Unsupported("device 'cuda' asked for, but torch sees no CUDA device here")
        if o.threads:
            torch.set_num_threads(o.threads)
        path = Path(path)
        self._torch = torch
        self.options = o
        self.device = device
        self.batch_size = o.batch_size
        self.config = read_config(path)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(
            path, dtype=getattr(torch, o.dtype), trust_remote_code=trust_remote_code).to(device).eval()
        self._tokenizer = Tokenizer.from_dir(path, trust_remote_code=trust_remote_code)
        # The model's own generation config (OPUS-MT: 4 beams, a forced end token at max_length) would be
        # merged into every request by transformers; each request says all it means instead, as CTranslate2's do.
        self.model_defaults = self.model.generation_config
        cfg = self.model.config
        self.decoder_start = int(cfg.decoder_start_token_id if cfg.decoder_start_token_id is not None
                                 else cfg.pad_token_id)
        self.model.generation_config = GenerationConfig(decoder_start_token_id=self.decoder_start,
                                                        pad_token_id=self._tokenizer.pad_token_id)
        self.banned = never_generated(self.config)
        self.max_context = max_source_tokens(self.config)

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    def info(self) -> EngineInfo:
        details: dict[str, Any] = {"torch": self._torch.__version__, "task": "seq2seq",
                                   "beam_size": self.options.beam_size}
        if (self.model_defaults.num_beams or 1) > 1:  # what the model's authors decode with
            details["model_num_beams"] = self.model_defaults.num_beams
        return EngineInfo("transformers", self.device, self.options.dtype, self._torch.get_num_threads(), details)

    def close(self) -> None:
        self.model = None

    def score(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        raise no_scoring(self.name)

    def logprobs(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        raise no_scoring(self.name)

    # generation -----------------------------------------------------------------------------
    def _config(self, params: SamplingParams) -> Any:
        from transformers import GenerationConfig

        beams = self.options.beam_size if params.greedy else 1
        return GenerationConfig(
            max_new_tokens=params.max_tokens,
            min_new_tokens=params.max_tokens if params.ignore_eos else params.min_tokens,
            do_sample=not params.greedy,
            num_beams=beams,
            # unset for greedy decoding, where transformers warns that they are unused
            temperature=None if params.greedy else params.temperature,
            top_k=None if params.greedy else params.top_k,
            top_p=None if params.greedy else params.top_p,
            eos_token_id=list(self._tokenizer.eos_token_ids) or None,
            pad_token_id=self._tokenizer.pad_token_id,
            decoder_start_token_id=self.decoder_start,
            suppress_tokens=self.banned or None,
        )

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        torch = self._torch
        check_sources(prompts, self.max_context)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        config = self._config(params)
        out: list[Completion] = []
        for start in range(0, len(prompts), self.batch_size):
            batch = prompts[start : start + self.batch_size]
            width = max(len(p) for p in batch)
            ids = torch.full((len(batch), width), self._tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for i, p in enumerate(batch):  # right padding: the encoder reads the mask
                ids[i, : len(p)] = torch.tensor(list(p), dtype=torch.long)
                mask[i, : len(p)] = 1
            with torch.inference_mode():
                result = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                             generation_config=config)
            # each row starts with the decoder's start token
            out.extend(finish(self._tokenizer, len(p), result[i, 1:].tolist(), params) for i, p in enumerate(batch))
        return out

    def stream(self, prompt: Sequence[int], params: SamplingParams) -> Iterator[int]:
        """One decoder step per token over the encoder's output, picked by the rule every engine shares
        (greedy or sampled; a beam search cannot stream, so ``beam_size`` does not apply here)."""
        torch = self._torch
        check_sources([prompt], self.max_context)
        gen = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
        rule = StopRule(params, self._tokenizer.eos_token_ids)
        with torch.inference_mode():
            source = torch.tensor([list(prompt)], device=self.device)
            encoded = self.model.get_encoder()(input_ids=source)
            token, past = self.decoder_start, None
            while True:
                out = self.model(encoder_outputs=encoded, decoder_input_ids=torch.tensor([[token]], device=self.device),
                                 past_key_values=past, use_cache=True)
                past = out.past_key_values
                token = pick_torch(out.logits[0, -1].float().cpu(), params, gen, [*rule.banned, *self.banned])
                reason = rule.take(token)
                if reason == "stop":
                    return
                yield token
                if reason == "length":
                    return
