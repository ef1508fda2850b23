"""The transformers (PyTorch) engine: the reference every other engine is checked against.

Its continuous batch and its CPU kernels live in :mod:`slipstream.engines.torch`; its settings are
:class:`~slipstream.engines.options.TransformersOptions`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from slipstream.engines.finishing import finish
from slipstream.engines.options import TransformersOptions
from slipstream.engines.protocol import Completion, EngineInfo, SamplingParams
from slipstream.engines.sampling import StopRule, pick_torch
from slipstream.tokenizer import Tokenizer
from slipstream.errors import InvalidConfig, Unsupported
from slipstream.extras import require


def preflight(path: Path, device: str) -> None:
    """Checks made before loading (see :func:`slipstream.engines.loading.preflight`)."""
    from slipstream.engines.checkpoint import check_fp8

    check_fp8(path, device, "transformers")


class TransformersEngine:
    name = "transformers"

    def __init__(self, path: Path, *, device: str = "cpu", options: TransformersOptions | None = None,
                 trust_remote_code: bool = False, **changes: Any):
        """``options`` (:class:`~slipstream.engines.options.TransformersOptions`), then ``changes`` to them
        by name (``gemm="torch"``)."""
        o = TransformersOptions.of(options, **changes)
        torch = require("torch", "core", "the transformers engine")
        from transformers import AutoModelForCausalLM

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise Unsupported("device 'cuda' asked for, but torch sees no CUDA device here")
        dtype = o.dtype
        head_dtype = dtype if o.head_dtype == "auto" else o.head_dtype
        if head_dtype not in (dtype, "bfloat16"):
            raise InvalidConfig(f"head_dtype must be the model's dtype ({dtype}) or bfloat16, got {head_dtype!r}")
        if head_dtype != dtype and not (device == "cpu" and dtype == "float32"):
            raise Unsupported(f"a bfloat16 head is for float32 models on the CPU; this engine runs {dtype} on {device}")
        preflight(Path(path), device)
        self.path = Path(path)
        if o.threads:
            torch.set_num_threads(o.threads)
        self._torch = torch
        self.options = o
        self.device = device
        self.dtype = dtype
        self.batch_size = o.batch_size
        self.model = AutoModelForCausalLM.from_pretrained(
            path, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code
        ).to(device)
        self.model.eval()
        from slipstream.engines.torch.kernels import blas
        from slipstream.engines.torch.kernels.int8_gemm import use_int8_gemm

        self.int8_layers = use_int8_gemm(self.model) if o.int8_gemm and device == "cpu" else 0
        self.head_dtype = "bfloat16" if head_dtype != dtype and blas.use_bfloat16_head(self.model) else dtype
        self.gemm = blas.resolve(o.gemm, device, dtype, o.threads, int8_model=self.int8_layers > 0)
        if self.gemm == "openblas":
            blas.use_openblas(self.model, o.threads)
        elif self.gemm == "onednn":
            blas.use_onednn(self.model)
        self._tokenizer = Tokenizer.from_dir(path, trust_remote_code=trust_remote_code)
        cfg = self.model.config
        self.max_context = int(
            getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 2048
        )
        self.adapter_bank: Any = None  # LoRA adapters (slipstream.engines.torch.lora), once one is loaded
        from slipstream.engines.prompt_lookup import LookupStats

        self.lookup_stats = LookupStats()  # prompt-lookup drafts and their acceptance, when it is on

    def adapters(self, max_loras: int = 4) -> Any:
        """The engine's LoRA adapters, served by its continuous batch; made on first use, with slots for
        ``max_loras`` resident at once."""
        if self.adapter_bank is None:
            from slipstream.engines.torch.lora import AdapterBank

            self.adapter_bank = AdapterBank(self.model, max_loras)
        return self.adapter_bank

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    def info(self) -> EngineInfo:
        # W8A8 layers multiplied in int8, the rest in the model's dtype (CTranslate2's name for the mix)
        compute = f"int8_{self.dtype}" if self.int8_layers else self.dtype
        return EngineInfo("transformers", self.device, compute, self._torch.get_num_threads(),
                          {"torch": self._torch.__version__, "gemm": self.gemm}
                          | ({"head_dtype": self.head_dtype} if self.head_dtype != self.dtype else {})
                          | ({"int8_gemm_layers": self.int8_layers} if self.int8_layers else {})
                          | ({"prompt_lookup": self.options.prompt_lookup} | self.lookup_stats.to_dict()
                             if self.options.prompt_lookup else {}))

    def close(self) -> None:
        self.model = None

    def stepper(self, *, prefix_cache_tokens: int = 0, prefill_tokens: int = 512,
                fused_prefill: bool | None = None, kv_cache_dtype: str | None = None) -> Any:
        """A continuous batch over this engine's model (see :mod:`slipstream.engines.torch.stepper`).
        ``fused_prefill``: newcomers' prompts ride in the decode step's forward pass where the model allows;
        ``kv_cache_dtype``: the cache's dtype ("auto": the model's). None: the engine's options."""
        from slipstream.engines.torch.stepper import TransformersStepper

        o = self.options
        fused = o.fused_prefill if fused_prefill is None else fused_prefill
        kv = kv_cache_dtype or o.kv_cache_dtype
        return TransformersStepper(self, prefix_cache_tokens=prefix_cache_tokens, prefill_tokens=prefill_tokens,
                                   fused_prefill=fused, kv_cache_dtype=None if kv == "auto" else kv,
                                   decode_attention=o.decode_attention, prompt_lookup=o.prompt_lookup,
                                   prompt_lookup_ngram=o.prompt_lookup_ngram,
                                   prompt_lookup_max_batch=o.prompt_lookup_max_batch, lookup_stats=self.lookup_stats)

    # scoring --------------------------------------------------------------------------------
    def _log_softmax(self, batch: Sequence[Sequence[int]]) -> Any:
        torch = self._torch
        width = max(len(s) for s in batch)
        ids = torch.full((len(batch), width), self._tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, s in enumerate(batch):
            ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
            mask[i, : len(s)] = 1
        with torch.inference_mode():
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            return logits.float().log_softmax(-1).cpu()

    def logprobs(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for start in range(0, len(sequences), self.batch_size):
            batch = sequences[start : start + self.batch_size]
            lp = self._log_softmax(batch)
            out.extend(lp[i, : len(s)].numpy() for i, s in enumerate(batch))
        return out

    def score(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        torch = self._torch
        out: list[np.ndarray] = []
        for start in range(0, len(sequences), self.batch_size):
            batch = sequences[start : start + self.batch_size]
            lp = self._log_softmax(batch)
            for i, s in enumerate(batch):
                target = torch.tensor(list(s[1:]), dtype=torch.long)
                out.append(lp[i, : len(s) - 1].gather(-1, target[:, None])[:, 0].numpy())
        return out

    # generation -----------------------------------------------------------------------------
    def _lookup(self, params: SamplingParams) -> bool:
        return bool(self.options.prompt_lookup) and params.greedy and params.adapter is None

    def _lookup_tokens(self, prompt: Sequence[int], params: SamplingParams) -> Iterator[int]:
        from slipstream.engines.prompt_lookup import greedy

        o = self.options
        return greedy(self.model, prompt, params, self._tokenizer.eos_token_ids, self.device, o.prompt_lookup,
                      o.prompt_lookup_ngram, self.lookup_stats)

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        torch = self._torch
        from transformers import GenerationConfig

        if self._lookup(params):
            if len(prompts) > 1:
                stepper = self.stepper(prefill_tokens=max(len(p) for p in prompts))
                if stepper.lookup:  # the model can fuse a step: the batch's rows draft side by side in one pass
                    return self._stepped(stepper, prompts, params)
            # one sequence at a time: each draft is checked against its own context
            return [finish(self._tokenizer, len(p), list(self._lookup_tokens(p, params)), params) for p in prompts]

        if params.seed is not None:
            torch.manual_seed(params.seed)
        width = max(len(p) for p in prompts)
        pad = self._tokenizer.pad_token_id
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding, as decoder-only generation needs
            ids[i, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
            mask[i, width - len(p) :] = 1
        config = GenerationConfig(
            max_new_tokens=params.max_tokens,
            min_new_tokens=params.max_tokens if params.ignore_eos else params.min_tokens,
            do_sample=not params.greedy,
            # unset for greedy decoding, where transformers warns that they are unused
            temperature=None if params.greedy else params.temperature,
            top_k=None if params.greedy else params.top_k,
            top_p=None if params.greedy else params.top_p,
            eos_token_id=list(self._tokenizer.eos_token_ids) or None,
            pad_token_id=pad,
        )
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), generation_config=config
            )
        return [
            finish(self._tokenizer, len(p), out[i, width:].tolist(), params) for i, p in enumerate(prompts)
        ]

    def _stepped(self, stepper: Any, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        """``prompts`` through ``stepper``, a continuous batch of their own (up to ``batch_size`` rows at a time),
        each row with its prompt-lookup drafts."""
        eos = list(self._tokenizer.eos_token_ids)
        out: list[list[int]] = [[] for _ in prompts]
        queued = list(range(len(prompts)))
        while queued or stepper.active:
            while queued and stepper.active < self.options.batch_size:
                i = queued.pop(0)
                stepper.add(i, prompts[i], params)
            for o in stepper.step():
                if o.token is not None:
                    out[o.seq_id].append(o.token)
                elif o.finish_reason == "stop" and eos:  # the step ended it on an end-of-sequence token
                    out[o.seq_id].append(eos[0])
        return [finish(self._tokenizer, len(p), out[i], params) for i, p in enumerate(prompts)]

    def stream(self, prompt: Sequence[int], params: SamplingParams) -> Iterator[int]:
        torch = self._torch
        if self._lookup(params):
            from slipstream.engines.prompt_lookup import until_stop

            yield from until_stop(self._lookup_tokens(prompt, params), params, self._tokenizer.eos_token_ids)
            return
        gen = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
        rule = StopRule(params, self._tokenizer.eos_token_ids)
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([list(prompt)], device=self.device), use_cache=True)
            while True:
                token = pick_torch(out.logits[0, -1].float().cpu(), params, gen, rule.banned)
                reason = rule.take(token)
                if reason == "stop":
                    return
                yield token
                if reason == "length":
                    return
                out = self.model(
                    input_ids=torch.tensor([[token]], device=self.device),
                    past_key_values=out.past_key_values,
                    use_cache=True,
                )
