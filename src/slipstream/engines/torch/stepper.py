"""Continuous batching for the transformers engine: sequences join and leave a running batch.

Every active sequence owns one row of the key/value cache (:class:`~.row_cache.RowCache`). A decode
step feeds one token per row at that row's own position; a 2-D attention mask hides each row's unused
columns. A new sequence joins either in the decode step's own forward pass (a fused step, where the
model allows: :mod:`.attention`) or prefilled on its own (with the other newcomers, left-padded) into an
ordinary cache, then copied into a free row. A finished sequence leaves at once (the last row moves into
its place). Prompts that share a prefix with an earlier prompt reuse its keys/values
(:class:`~slipstream.engines.prefix_cache.PrefixStore`). Tokens are picked and sequences end by the one
:class:`~slipstream.engines.sampling.StopRule`.

With prompt lookup on (engine option ``prompt_lookup``), a greedy row may carry a draft into the fused step: its
next token and the draft ride as a segment of its own row (causal over that row, like a newcomer's prompt), the
row keeps the draft's longest prefix its own argmax agrees with plus one token of its own, and its length moves
past only what it kept (the rejected columns are never attended to and are overwritten by the next step). So a
step can advance a row by several tokens, each reported as its own :class:`StepOutput`.

Imported only by :meth:`TransformersEngine.stepper`, so torch is imported at module level here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
from transformers.cache_utils import DynamicCache

from slipstream.engines.prefix_cache import PrefixStore
from slipstream.engines.prompt_lookup import LookupStats, propose
from slipstream.engines.protocol import SamplingParams
from slipstream.engines.sampling import StopRule, pick_torch
from slipstream.engines.stepping import StepOutput
from slipstream.engines.torch.attention import FUSED_MODEL_TYPES, StepPlan, can_fuse, plan_masks, use_grouped_attention
from slipstream.engines.torch.lora import step_slots
from slipstream.engines.torch.row_cache import RowCache


@dataclass
class _Seq:
    seq_id: int
    prompt: list[int]
    params: SamplingParams
    generator: Any
    rule: StopRule
    length: int = 0  # tokens held in the cache row
    next_token: int = -1
    slot: int = 0  # its LoRA adapter's slot once it holds one (0: the base alone)
    context: list[int] | None = None  # prompt and tokens picked so far, where prompt lookup drafts from it

    @property
    def adapter(self) -> str | None:
        return self.params.adapter

    @property
    def reuses_prefixes(self) -> bool:  # an adapter changes the keys and values a prefix would hold
        return self.params.adapter is None


class TransformersStepper:
    """The :class:`~slipstream.engines.stepping.Stepper` of a :class:`TransformersEngine`."""

    def __init__(self, engine: Any, *, prefix_cache_tokens: int = 0, prefill_tokens: int = 512,
                 fused_prefill: bool = True, kv_cache_dtype: str | None = None,
                 decode_attention: Literal["c", "torch"] = "c", prompt_lookup: int = 0, prompt_lookup_ngram: int = 3,
                 prompt_lookup_max_batch: int = 4, lookup_stats: LookupStats | None = None):
        self.engine, self.model, self.device = engine, engine.model, engine.device
        use_grouped_attention(self.model)
        # fused_prefill=False: newcomers prefilled in a pass of their own
        self.fused = fused_prefill and can_fuse(self.model)
        self.c_kernel = decode_attention == "c"  # the fused step's decode rows through the C kernel
        self.kv_dtype = getattr(torch, kv_cache_dtype) if kv_cache_dtype else self.model.dtype
        if self.kv_dtype != self.model.dtype and not self.fused:
            raise ValueError(f"a {kv_cache_dtype} key/value cache needs the fused step (models of type "
                             f"{', '.join(sorted(FUSED_MODEL_TYPES))}, engine option fused_prefill on); this "
                             f"model keeps its {self.model.dtype} cache")
        self.max_context = engine.max_context
        # drafts ride in the fused step only: without it a row's draft would need a pass of its own
        self.lookup = prompt_lookup if self.fused else 0
        self.lookup_ngram, self.lookup_max_batch = prompt_lookup_ngram, prompt_lookup_max_batch
        self.lookup_stats = lookup_stats if lookup_stats is not None else LookupStats()
        self.eos = list(engine.tokenizer.eos_token_ids)
        self.prefill_tokens = prefill_tokens  # prompt tokens prefilled per step (at least one prompt)
        self.prefixes: PrefixStore[list[tuple[Any, Any]]] | None = (
            PrefixStore(prefix_cache_tokens) if prefix_cache_tokens > 0 else None)
        self.cache = RowCache(self.model.config.get_text_config(decoder=True).num_hidden_layers)
        self.rows: list[_Seq] = []
        self.pending: list[_Seq] = []
        self.counters = {"prefills": 0, "decode_steps": 0, "peak_batch": 0, "mixed_adapter_steps": 0}
        if self.lookup:
            self.counters |= {"lookup_drafted": 0, "lookup_accepted": 0}

    @property
    def bank(self) -> Any:
        """The engine's LoRA adapters (:class:`~.lora.AdapterBank`), None until it has loaded one."""
        return getattr(self.engine, "adapter_bank", None)

    @property
    def active(self) -> int:
        return len(self.rows) + len(self.pending)

    def stats(self) -> dict[str, int]:
        p = self.prefixes
        if p is None:
            return dict(self.counters)
        return {**self.counters, "prefix_hits": p.hits, "prefix_misses": p.misses,
                "prefix_tokens_reused": p.tokens_reused}

    def add(self, seq_id: int, prompt: Sequence[int], params: SamplingParams) -> None:
        if not prompt:
            raise ValueError("empty prompt")
        if params.adapter is not None:
            if self.bank is None:
                raise ValueError(f"adapter {params.adapter!r}: this engine has no adapters loaded")
            self.bank.prepare(params.adapter)
        gen = torch.Generator().manual_seed(params.seed if params.seed is not None else
                                            int(torch.randint(0, 2**62, (1,))))
        s = _Seq(seq_id, list(prompt), params, gen, StopRule(params, self.eos))
        if self.lookup and params.greedy and params.adapter is None:
            s.context = list(prompt)
        self.pending.append(s)

    def remove(self, seq_id: int) -> None:
        for s in self.pending:
            if s.seq_id == seq_id and s.adapter is not None:
                self.bank.forget(s.adapter)
        self.pending = [s for s in self.pending if s.seq_id != seq_id]
        for r, s in enumerate(self.rows):
            if s.seq_id == seq_id:
                self._drop_row(r)
                return

    def _leave(self, s: _Seq) -> None:
        if s.slot:
            self.bank.release(s.adapter)
            s.slot = 0

    def _slots(self, per_row: list[tuple[_Seq, int]], shape: str) -> Any:
        """The tokens' adapter slots for :func:`step_slots` (None when no row uses an adapter): ``per_row``
        is each row with its token count; ``shape`` "flat" for a fused step's one sequence, else "rows"."""
        if not any(s.slot for s, _ in per_row):
            return None
        if len({s.slot for s, _ in per_row}) > 1:
            self.counters["mixed_adapter_steps"] += 1
        if shape == "rows":
            return torch.tensor([[s.slot] for s, _ in per_row], device=self.device)
        return torch.cat([torch.full((n,), s.slot) for s, n in per_row])[None].to(self.device)

    def _drop_row(self, r: int) -> None:
        self._leave(self.rows[r])
        last = len(self.rows) - 1
        if r != last:
            with torch.inference_mode():
                self.cache.move(last, r, self.rows[last].length)
            self.rows[r] = self.rows[last]
        self.rows.pop()

    # one step -------------------------------------------------------------------------------
    def step(self) -> list[StepOutput]:
        with torch.inference_mode():
            if self.fused and (self.pending or self.rows):
                out = self._fused_step()
            else:
                out = self._decode() if self.rows else []
                if self.pending:
                    out += self._prefill()
        self.counters["peak_batch"] = max(self.counters["peak_batch"], len(self.rows))
        return out

    def _choose(self, s: _Seq, logits: Any) -> StepOutput | None:
        """Pick the next token of ``s`` by its :class:`StopRule`: what this step did to it."""
        token = pick_torch(logits, s.params, s.generator, s.rule.banned)
        reason = s.rule.take(token)
        if reason == "stop":
            return StepOutput(s.seq_id, None, "stop")
        s.next_token = token
        if s.context is not None:
            s.context.append(token)
        if reason == "length" or s.length + 1 >= self.max_context:
            return StepOutput(s.seq_id, token, "length")
        return StepOutput(s.seq_id, token)

    def _decode(self) -> list[StepOutput]:
        rows, cache = self.rows, self.cache
        lengths = torch.tensor([s.length for s in rows])
        cache.width = int(lengths.max())
        cache.ensure(len(rows), cache.width + 1, list(zip(cache.keys, cache.values)))
        cache.step_rows, cache.step_cols = torch.arange(len(rows)), lengths
        mask = (torch.arange(cache.width + 1)[None, :] <= lengths[:, None]).long()
        with step_slots(self._slots([(s, 1) for s in rows], "rows")):
            logits = self.model(
                input_ids=torch.tensor([[s.next_token] for s in rows], device=self.device),
                position_ids=lengths[:, None].to(self.device), attention_mask=mask.to(self.device),
                past_key_values=cache, use_cache=True,
            ).logits[:, -1].float().cpu()
        self.counters["decode_steps"] += 1
        outs, done = [], []
        for r, s in enumerate(rows):
            s.length += 1
            o = self._choose(s, logits[r])
            outs.append(o)
            if o.finish_reason:
                done.append(r)
        for r in reversed(done):
            self._drop_row(r)
        return outs

    def _fused_step(self) -> list[StepOutput]:
        """Decode every row and prefill the newcomers, if any, in one forward pass (see :class:`StepPlan`)."""
        rows, cache = self.rows, self.cache
        joins = []  # (seq, reused prefix length, its keys/values)
        for s in self._take_pending():
            k, payload = (self.prefixes.lookup(s.prompt) if self.prefixes is not None and s.reuses_prefixes
                          else (0, None))
            joins.append((s, k if payload is not None else 0, payload))
        drafts = self._drafts()
        # with a draft anywhere, every running row rides as a segment (its next token, then its draft, if any)
        decode, total = (0 if any(drafts) else len(rows)), len(rows) + len(joins)
        lengths = torch.tensor([s.length for s in rows], dtype=torch.long)
        width = int(lengths.max()) + 1 if rows else 0
        cache.ensure(total, max([width + max(map(len, drafts), default=0)] + [len(s.prompt) for s, _, _ in joins]),
                     self._buffer_like())
        cols, ids, segments, keep = [lengths[:decode]], [s.next_token for s in rows[:decode]], [], list(range(decode))
        first = decode
        for r, (s, draft) in enumerate(zip(rows[decode:], drafts[decode:]), start=decode):
            end = s.length + 1 + len(draft)
            segments.append((r, first, s.length, end))
            cols.append(torch.arange(s.length, end))
            ids += [s.next_token, *draft]
            keep += range(first, first + 1 + len(draft))  # every token's logits: each checks the next
            first += 1 + len(draft)
        for j, (s, k, payload) in enumerate(joins):
            if payload is not None:
                cache.put(len(rows) + j, [(pk[:, :k], pv[:, :k]) for pk, pv in payload])
            end = len(s.prompt)
            segments.append((len(rows) + j, first, k, end))
            cols.append(torch.arange(k, end))
            ids += s.prompt[k:]
            keep.append(first + end - k - 1)  # a prompt's last token's logits: its first pick
            first += end - k
        positions = torch.cat(cols)
        plan = StepPlan.build(lengths[:decode].tolist(), segments, positions, self.c_kernel)
        cache.width = width - 1 if rows else 0
        cache.step_rows = torch.cat([torch.arange(decode)] + [torch.full((e - k,), r) for r, _, k, e in segments])
        cache.step_cols, cache.plan = positions, plan
        # every token's logits when all are single decode tokens; else the ones named in keep
        keep = torch.tensor(keep) if segments else 0
        slots = self._slots([(s, 1 + len(d)) for s, d in zip(rows, drafts)]
                            + [(s, len(s.prompt) - k) for s, k, _ in joins], "flat")
        try:
            with plan_masks(), step_slots(slots):
                logits = self.model(
                    input_ids=torch.tensor([ids], device=self.device), position_ids=positions[None].to(self.device),
                    past_key_values=cache, use_cache=True, slipstream_plan=plan,
                    logits_to_keep=keep.to(self.device) if segments else 0,
                ).logits[0].float().cpu()
        finally:
            cache.plan = None
        self.counters["decode_steps"] += bool(rows)
        self.counters["prefills"] += bool(joins)
        outs, done, at = [], [], 0
        for r, (s, draft) in enumerate(zip(rows, drafts)):
            ended = self._advance(s, draft, logits[at: at + 1 + len(draft)], outs)
            if ended:
                done.append(r)
            at += 1 + len(draft)
        base = len(rows)  # the joins' rows follow the running ones
        for j, (s, k, payload) in enumerate(joins):
            s.length = len(s.prompt)
            if self.prefixes is not None and s.reuses_prefixes:
                row = base + j
                self.prefixes.insert(s.prompt, [(kb[row, :, : s.length].clone(), vb[row, :, : s.length].clone())
                                                for kb, vb in zip(cache.keys, cache.values)])
            out = self._choose(s, logits[at + j])
            outs.append(out)
            rows.append(s)
            if out.finish_reason:
                done.append(len(rows) - 1)
        for r in reversed(done):
            self._drop_row(r)
        return outs

    def _drafts(self) -> list[list[int]]:
        """Each running row's prompt-lookup draft ([] for none): greedy rows without an adapter, while the batch
        is small enough (``prompt_lookup_max_batch``), never past the row's token budget or the context."""
        if not self.lookup or len(self.rows) > self.lookup_max_batch:
            return [[] for _ in self.rows]
        drafts = []
        for s in self.rows:
            room = min(s.params.max_tokens - s.rule.generated - 1, self.max_context - s.length - 2, self.lookup)
            drafts.append(propose(s.context, room, self.lookup_ngram) if s.context is not None and room > 0 else [])
        return drafts

    def _advance(self, s: _Seq, draft: list[int], logits: Any, outs: list[StepOutput]) -> bool:
        """Move row ``s`` past its next token and the longest prefix of ``draft`` its own picks agree with
        (``logits``: one row per token fed, the next token's first), appending an output per token picked;
        True when the sequence ended."""
        s.length += 1
        out = self._choose(s, logits[0])
        outs.append(out)
        kept = 0
        while not out.finish_reason and kept < len(draft) and s.next_token == draft[kept]:
            kept += 1  # the draft token just picked is already in the cache, one column further on
            s.length += 1
            out = self._choose(s, logits[kept])
            outs.append(out)
        if self.lookup and s.context is not None:  # a row that drafts when it can: its passes and tokens count
            self.counters["lookup_drafted"] += len(draft)
            self.counters["lookup_accepted"] += kept
            st = self.lookup_stats
            st.steps, st.drafted, st.accepted = st.steps + 1, st.drafted + len(draft), st.accepted + kept
            st.tokens += sum(o.token is not None for o in outs[len(outs) - 1 - kept:])
        return bool(out.finish_reason)

    def _buffer_like(self) -> list[tuple[Any, Any]]:
        """Each layer's key/value shape and dtype, for a cache that has no buffers yet."""
        if self.cache.keys:
            return list(zip(self.cache.keys, self.cache.values))
        config = self.model.config.get_text_config(decoder=True)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        like = torch.empty((1, config.num_key_value_heads, 0, head_dim), dtype=self.kv_dtype, device=self.device)
        return [(like, like)] * config.num_hidden_layers

    def _take_pending(self) -> list[_Seq]:
        taken, waiting, budget = [], [], self.prefill_tokens
        while self.pending and (not taken or len(self.pending[0].prompt) <= budget):
            s = self.pending.pop(0)
            if s.adapter is not None and not s.slot:
                slot = self.bank.acquire(s.adapter)
                if slot is None:  # every slot held by running rows: it waits, the others go on
                    waiting.append(s)
                    continue
                s.slot = slot
            budget -= len(s.prompt)
            taken.append(s)
        self.pending = waiting + self.pending
        return taken

    def _prefill(self) -> list[StepOutput]:
        fresh, outs = [], []
        for s in self._take_pending():
            k, payload = (self.prefixes.lookup(s.prompt) if self.prefixes is not None and s.reuses_prefixes
                          else (0, None))
            if payload is None:
                fresh.append(s)
            else:
                kv, logits = self._prefill_from(s.prompt, k, payload)
                outs.append(self._join(s, kv, logits))
        if fresh:
            with step_slots(self._slots([(s, len(s.prompt)) for s in fresh], "rows")):
                prefilled = self._prefill_batch([s.prompt for s in fresh])
            for s, (kv, logits) in zip(fresh, prefilled):
                outs.append(self._join(s, kv, logits))
        self.counters["prefills"] += 1
        return outs

    def _join(self, s: _Seq, kv: list[tuple[Any, Any]], logits: Any) -> StepOutput:
        if self.prefixes is not None and s.reuses_prefixes:
            self.prefixes.insert(s.prompt, [(k.clone(), v.clone()) for k, v in kv])
        s.length = len(s.prompt)
        out = self._choose(s, logits)
        if out.finish_reason is not None:
            self._leave(s)
        else:
            row = len(self.rows)
            self.cache.ensure(row + 1, s.length + 1, [(k[None], v[None]) for k, v in kv])
            self.cache.put(row, kv)
            self.rows.append(s)
        return out

    def _prefill_batch(self, prompts: list[list[int]]) -> list[tuple[list[tuple[Any, Any]], Any]]:
        width = max(len(p) for p in prompts)
        ids = torch.zeros((len(prompts), width), dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding: every row's last token is in the last column
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                            position_ids=positions.to(self.device), past_key_values=cache, use_cache=True,
                            logits_to_keep=1).logits[:, -1].float().cpu()
        out = []
        for i, p in enumerate(prompts):
            kv = [(layer.keys[i, :, width - len(p):], layer.values[i, :, width - len(p):]) for layer in cache.layers]
            out.append((kv, logits[i]))
        return out

    def _prefill_from(self, prompt: list[int], k: int, payload: list[tuple[Any, Any]]) -> tuple[list, Any]:
        cache = DynamicCache(ddp_cache_data=[(pk[None, :, :k], pv[None, :, :k]) for pk, pv in payload])
        rest = prompt[k:]
        logits = self.model(
            input_ids=torch.tensor([rest], device=self.device),
            position_ids=torch.arange(k, len(prompt), device=self.device)[None],
            attention_mask=torch.ones((1, len(prompt)), dtype=torch.long, device=self.device),
            past_key_values=cache, use_cache=True, logits_to_keep=1,
        ).logits[0, -1].float().cpu()
        return [(layer.keys[0], layer.values[0]) for layer in cache.layers], logits
