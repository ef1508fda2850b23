"""Continuous batching for the transformers engine: a batched key/value cache that rows join and leave.

Every active sequence owns one row of a preallocated key/value buffer per layer, holding its tokens
left-aligned in columns ``0 .. length-1``. A decode step feeds one token per row at that row's own
position and writes its keys/values at that row's own column, so rows of different lengths share one
forward pass without ever shifting memory; a 2-D attention mask hides each row's unused columns. A
new sequence is prefilled on its own (or with the other newcomers, left-padded) into an ordinary
cache, then copied into a free row: it joins at the next step. A finished sequence leaves at once (the
last row moves into its place). Prompts that share a prefix with an earlier prompt reuse its
keys/values (:class:`~slipstream.engines.prefix_cache.PrefixStore`).

Imported only by :meth:`TransformersEngine.stepper`, so torch is imported at module level here.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from slipstream.engines import decode_attention
from slipstream.engines.prefix_cache import PrefixStore
from slipstream.engines.protocol import SamplingParams
from slipstream.engines.stepping import StepOutput
from slipstream.engines.transformers import pick


ROWS_ATTENTION = "slipstream_rows"
# Architectures whose attention layers call the attention interface with every keyword the model was
# given (the step plan travels that way) and whose only masks are causal and sliding-window: checked
# token for token against generate() in tests/engines/test_stepping.py.
FUSED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma3_text"})
_fused = threading.local()  # set while a fused step runs on this thread: transformers' masks are skipped


def row_groups(lengths: Sequence[int], overhead: int = 96, max_groups: int = 8) -> list[tuple[int, int]]:
    """Split rows ``0 .. len(lengths)-1`` into contiguous groups whose attention runs separately.

    One call over every row pads each row to the longest one: a single 400-token prompt among rows of
    100 makes the whole batch read 400 columns. A group costs ``rows x (its longest length + 1)``
    column reads plus ``overhead`` (a call's fixed cost, in the same units: on one Xeon core PyTorch's
    fused attention took 9 us per call plus 0.13 us per row and column, SmolLM2's 9 query and 3
    key/value heads); cuts are added greedily, the one that saves most first, while they save more than
    they cost. Replaying the serving benchmark's 16 streams on the engine alone, W8A8 SmolLM2, the
    grouped decode steps took 86.8 ms on average against 99.2 ms in one group."""
    n = len(lengths)
    widths = np.asarray(lengths, dtype=np.int64) + 1
    groups = [(0, n)]
    while len(groups) < max_groups:
        best = (overhead, -1, 0)  # (saving, group, cut)
        for g, (a, b) in enumerate(groups):
            if b - a < 2:
                continue
            w = widths[a:b]
            left = np.maximum.accumulate(w)[:-1] * np.arange(1, b - a)  # rows a..k-1, k = a+1 .. b-1
            right = np.maximum.accumulate(w[::-1])[::-1][1:] * np.arange(b - a - 1, 0, -1)  # rows k..b-1
            split = left + right
            k = int(np.argmin(split))
            saving = int(w.max()) * (b - a) - int(split[k])
            if saving > best[0]:
                best = (saving, g, a + k + 1)
        if best[1] < 0:
            break
        _, g, cut = best
        a, b = groups[g]
        groups[g: g + 1] = [(a, cut), (cut, b)]
    return groups


@dataclass
class StepPlan:
    """One fused step: decode tokens for rows ``0 .. decode-1`` first, then each newcomer's prompt
    tokens (a segment) in the row it joins. Decode rows attend in contiguous groups
    (:func:`row_groups`), each over its own longest row's columns. Masks are built once here and read
    by every layer."""

    decode: int
    groups: list[tuple[int, int, int]]  # (first row, end row, columns) of the decode rows
    group_masks: list[Any]  # [rows, columns] bool: each row's own columns up to its new token
    segments: list[tuple[int, int, int, int]] = field(default_factory=list)  # (row, first token, first col, end col)
    segment_masks: list[Any] = field(default_factory=list)  # [tokens, end col] bool, causal from first col
    positions: Any = None  # [decode + prompt tokens]: each token's position, which is also its column

    @classmethod
    def build(cls, lengths: Sequence[int], segments: list[tuple[int, int, int, int]], positions: Any) -> "StepPlan":
        """``lengths``: the decode rows' tokens in cache (the new token goes to that column)."""
        groups, group_masks = [], []
        for a, b in row_groups(lengths) if len(lengths) else []:
            width = max(lengths[a:b]) + 1
            groups.append((a, b, width))
            group_masks.append(torch.arange(width)[None, :] <= positions[a:b, None])
        masks = [torch.arange(end)[None, :] <= torch.arange(start, end)[:, None] for _, _, start, end in segments]
        return cls(len(lengths), groups, group_masks, segments, masks, positions)

    def masks(self, window: int | None) -> tuple[list[Any], list[Any]]:
        """The masks, narrowed to a sliding window (key column > query position - window) if any."""
        if not window:
            return self.group_masks, self.segment_masks
        cache = getattr(self, "_windowed", {})
        if window not in cache:
            pos = self.positions
            groups = [m & (torch.arange(w)[None, :] > pos[a:b, None] - window)
                      for m, (a, b, w) in zip(self.group_masks, self.groups)]
            segs = [m & (torch.arange(end)[None, :] > pos[first: first + end - start, None] - window)
                    for m, (_, first, start, end) in zip(self.segment_masks, self.segments)]
            cache[window] = (groups, segs)
            self._windowed = cache
        return cache[window]


def _fused_attention(query: Any, key: Any, value: Any, plan: StepPlan, scaling: float | None,
                     window: int | None) -> tuple[Any, None]:
    """Attention for a :class:`StepPlan`: ``query`` is ``[1, heads, tokens, dim]``, ``key``/``value`` the
    whole row buffers ``[rows, kv_heads, columns, dim]`` with this step's keys/values already written."""
    sdpa = torch.nn.functional.scaled_dot_product_attention
    group_masks, segment_masks = plan.masks(window)
    dtype = query.dtype
    query = query.to(key.dtype)  # a cache kept in another dtype (kv_cache_dtype): attend in that dtype
    parts = []
    if plan.decode and key.dtype == torch.float32 and decode_attention.available():
        pos = plan.positions[: plan.decode]
        lo = (pos - window + 1).clamp(min=0) if window else torch.zeros_like(pos)
        parts.append(decode_attention.decode_attention(
            query[0, :, : plan.decode].transpose(0, 1), key, value, torch.arange(plan.decode), lo, pos + 1,
            scaling if scaling is not None else query.shape[-1] ** -0.5))  # [rows, heads, dim]
    elif plan.decode:
        q = query[0, :, : plan.decode].transpose(0, 1).unsqueeze(2)  # [rows, heads, 1, dim]
        for (a, b, width), mask in zip(plan.groups, group_masks):
            out = sdpa(q[a:b], key[a:b, :, :width], value[a:b, :, :width], attn_mask=mask[:, None, None, :],
                       scale=scaling, enable_gqa=True)
            parts.append(out[:, :, 0])  # [rows, heads, dim]
    for (row, first, start, end), mask in zip(plan.segments, segment_masks):
        q = query[:, :, first: first + end - start]  # [1, heads, tokens, dim]
        k, v = key[row: row + 1, :, :end], value[row: row + 1, :, :end]
        out = sdpa(q, k, v, attn_mask=mask[None, None], scale=scaling, enable_gqa=True)
        parts.append(out[0].transpose(0, 1))  # [tokens, heads, dim]
    return (parts[0] if len(parts) == 1 else torch.cat(parts))[None].to(dtype), None


def grouped_decode_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                             scaling: float | None = None, dropout: float = 0.0, **kwargs: Any) -> tuple[Any, None]:
    """Attention for one new token per row, grouped-query heads read straight from the cache.

    transformers' SDPA path copies every key/value head ``heads / kv_heads`` times whenever there is
    an attention mask (and a continuous batch always has one); at 64 rows of a few hundred columns
    those copies took most of a decode step. Here PyTorch's fused attention reads each key/value head
    once for its group of query heads (``enable_gqa``), from the cache rows in place. SmolLM2's 30 layers,
    one thread, Zen 4, at 1 / 16 / 64 rows of 200 / 200 / 300 columns: 1.1 / 23.7 / 123.8 ms, against
    1.9 / 25.3 / 129.9 ms for the same arithmetic as batched matrix products (this function's earlier
    form). At 16 rows that is still a fifth of a W8A8 decode step: the float32 keys and values are
    read from memory once per step, 148 MB at 200 columns. Prefill (more than one query token) and models without grouped heads
    go to transformers' SDPA path unchanged.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plan = kwargs.get("slipstream_plan")
    if plan is not None:
        return _fused_attention(query, key, value, plan, scaling, kwargs.get("sliding_window"))
    if query.shape[2] != 1 or key.shape[1] == query.shape[1]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    mask = attention_mask[:, :, -1:, : key.shape[-2]] if attention_mask is not None else None
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling,
                                                           enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def _rows_mask(*args: Any, **kwargs: Any) -> Any:
    """transformers' SDPA masks, except in a fused step: its plan carries the masks."""
    from transformers.masking_utils import sdpa_mask

    return None if getattr(_fused, "active", False) else sdpa_mask(*args, **kwargs)


def can_fuse(model: Any) -> bool:
    """Whether newcomers' prompts can join a decode step's forward pass on this model."""
    config = model.config.get_text_config(decoder=True)
    return (getattr(model.config, "_attn_implementation", None) == ROWS_ATTENTION
            and config.model_type in FUSED_MODEL_TYPES
            and not getattr(config, "attn_logit_softcapping", None)
            and not getattr(config, "use_bidirectional_attention", False))


def _use_grouped_attention(model: Any) -> None:
    """Switch an SDPA model to :func:`grouped_decode_attention` (same masks, same prefill path)."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ROWS_ATTENTION, grouped_decode_attention)
    AttentionMaskInterface.register(ROWS_ATTENTION, _rows_mask)
    model.set_attn_implementation(ROWS_ATTENTION)


class _RowLayer(DynamicLayer):
    """One layer's view of the shared buffers: writes each row's new key/value at that row's column."""

    def __init__(self, owner: "RowCache", index: int):
        super().__init__()
        self.owner, self.index = owner, index
        self.is_initialized = True

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        o = self.owner
        k, v = o.keys[self.index], o.values[self.index]
        if o.plan is not None:  # a fused step: [1, kv_heads, tokens, dim], each token to its row and column
            k[o.step_rows, :, o.step_cols, :] = key_states[0].transpose(0, 1).to(k.dtype)
            v[o.step_rows, :, o.step_cols, :] = value_states[0].transpose(0, 1).to(v.dtype)
            return k, v
        k[o.step_rows, :, o.step_cols, :] = key_states[:, :, 0, :]
        v[o.step_rows, :, o.step_cols, :] = value_states[:, :, 0, :]
        rows, width = len(o.step_rows), o.width + 1
        self.keys, self.values = k[:rows, :, :width], v[:rows, :, :width]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.owner.width


class RowCache(Cache):
    """Per-layer buffers ``[rows, kv_heads, columns, head_dim]``, grown by doubling."""

    def __init__(self, layers: int):
        super().__init__(layers=[_RowLayer(self, i) for i in range(layers)])
        self.keys: list[Any] = []
        self.values: list[Any] = []
        self.width = 0  # columns in use before this step (the longest row)
        self.step_rows: Any = None
        self.step_cols: Any = None
        self.plan: StepPlan | None = None

    def ensure(self, rows: int, cols: int, like: list[tuple[Any, Any]]) -> None:
        """Make room for ``rows`` x ``cols``; ``like`` gives each layer's (keys, values) shape and dtype."""
        have_rows = self.keys[0].shape[0] if self.keys else 0
        have_cols = self.keys[0].shape[2] if self.keys else 0
        if rows <= have_rows and cols <= have_cols:
            return
        new_rows, new_cols = max(rows, 2 * have_rows, 1), max(cols, 2 * have_cols, 64)
        if rows <= have_rows:
            new_rows = have_rows
        if cols <= have_cols:
            new_cols = have_cols
        fresh = not self.keys
        for i, (k, v) in enumerate(like):
            nk = k.new_zeros((new_rows, k.shape[-3], new_cols, k.shape[-1]))
            nv = v.new_zeros((new_rows, v.shape[-3], new_cols, v.shape[-1]))
            if not fresh:
                nk[:have_rows, :, :have_cols] = self.keys[i]
                nv[:have_rows, :, :have_cols] = self.values[i]
                self.keys[i], self.values[i] = nk, nv
            else:
                self.keys.append(nk)
                self.values.append(nv)

    def put(self, row: int, kv: list[tuple[Any, Any]]) -> None:
        """Copy one sequence's keys/values (``[kv_heads, length, head_dim]`` per layer) into ``row``."""
        for i, (k, v) in enumerate(kv):
            self.keys[i][row, :, : k.shape[1]] = k
            self.values[i][row, :, : v.shape[1]] = v

    def move(self, src: int, dst: int, length: int) -> None:
        for k, v in zip(self.keys, self.values):
            k[dst, :, :length] = k[src, :, :length]
            v[dst, :, :length] = v[src, :, :length]


@dataclass
class _Seq:
    seq_id: int
    prompt: list[int]
    params: SamplingParams
    generator: Any
    generated: int = 0
    length: int = 0  # tokens held in the cache row
    next_token: int = -1


class TransformersStepper:
    """The :class:`~slipstream.engines.stepping.Stepper` of a :class:`TransformersEngine`."""

    def __init__(self, engine: Any, *, prefix_cache_tokens: int = 0, prefill_tokens: int = 512,
                 fused_prefill: bool | None = None, kv_cache_dtype: str | None = None):
        self.model, self.device = engine.model, engine.device
        _use_grouped_attention(self.model)
        if fused_prefill is None:  # SLIPSTREAM_FUSED_PREFILL=0: newcomers prefilled in a pass of their own
            fused_prefill = os.environ.get("SLIPSTREAM_FUSED_PREFILL", "1") != "0"
        self.fused = fused_prefill and can_fuse(self.model)
        self.kv_dtype = getattr(torch, kv_cache_dtype) if kv_cache_dtype else self.model.dtype
        if self.kv_dtype != self.model.dtype and not self.fused:
            raise ValueError(f"a {kv_cache_dtype} key/value cache needs the fused step (models of type "
                             f"{', '.join(sorted(FUSED_MODEL_TYPES))}, SLIPSTREAM_FUSED_PREFILL not 0); this "
                             f"model keeps its {self.model.dtype} cache")
        self.max_context = engine.max_context
        self.eos = list(engine.tokenizer.eos_token_ids)
        self.prefill_tokens = prefill_tokens  # prompt tokens prefilled per step (at least one prompt)
        self.prefixes: PrefixStore[list[tuple[Any, Any]]] | None = (
            PrefixStore(prefix_cache_tokens) if prefix_cache_tokens > 0 else None)
        self.cache = RowCache(self.model.config.get_text_config(decoder=True).num_hidden_layers)
        self.rows: list[_Seq] = []
        self.pending: list[_Seq] = []
        self.counters = {"prefills": 0, "decode_steps": 0, "peak_batch": 0}

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
        gen = torch.Generator().manual_seed(params.seed if params.seed is not None else
                                            int(torch.randint(0, 2**62, (1,))))
        self.pending.append(_Seq(seq_id, list(prompt), params, gen))

    def remove(self, seq_id: int) -> None:
        self.pending = [s for s in self.pending if s.seq_id != seq_id]
        for r, s in enumerate(self.rows):
            if s.seq_id == seq_id:
                self._drop_row(r)
                return

    def _drop_row(self, r: int) -> None:
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
        """Pick the next token of ``s``; None if it goes on, else what ended it."""
        p = s.params
        min_tokens = p.max_tokens if p.ignore_eos else p.min_tokens
        if s.generated < min_tokens and self.eos:
            logits[self.eos] = float("-inf")
        token = pick(logits, p, s.generator)
        if token in self.eos and s.generated >= min_tokens:
            return StepOutput(s.seq_id, None, "stop")
        s.generated += 1
        s.next_token = token
        if s.generated >= p.max_tokens or s.length + 1 >= self.max_context:
            return StepOutput(s.seq_id, token, "length")
        return StepOutput(s.seq_id, token)

    def _decode(self) -> list[StepOutput]:
        rows, cache = self.rows, self.cache
        lengths = torch.tensor([s.length for s in rows])
        cache.width = int(lengths.max())
        cache.ensure(len(rows), cache.width + 1, list(zip(cache.keys, cache.values)))
        cache.step_rows, cache.step_cols = torch.arange(len(rows)), lengths
        mask = (torch.arange(cache.width + 1)[None, :] <= lengths[:, None]).long()
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
            k, payload = self.prefixes.lookup(s.prompt) if self.prefixes is not None else (0, None)
            joins.append((s, k if payload is not None else 0, payload))
        decode, total = len(rows), len(rows) + len(joins)
        lengths = torch.tensor([s.length for s in rows], dtype=torch.long)
        width = int(lengths.max()) + 1 if decode else 0
        cache.ensure(total, max([width] + [len(s.prompt) for s, _, _ in joins]), self._buffer_like())
        cols, ids, segments = [lengths], [s.next_token for s in rows], []
        first = decode
        for j, (s, k, payload) in enumerate(joins):
            if payload is not None:
                cache.put(decode + j, [(pk[:, :k], pv[:, :k]) for pk, pv in payload])
            end = len(s.prompt)
            segments.append((decode + j, first, k, end))
            cols.append(torch.arange(k, end))
            ids += s.prompt[k:]
            first += end - k
        positions = torch.cat(cols)
        plan = StepPlan.build(lengths.tolist(), segments, positions)
        cache.width = width - 1 if decode else 0
        cache.step_rows = torch.cat([torch.arange(decode)] + [torch.full((e - k,), r) for r, _, k, e in segments])
        cache.step_cols, cache.plan = positions, plan
        # every token's logits when all are decode tokens; else the rows' and each prompt's last
        keep = torch.tensor(list(range(decode)) + [f + e - k - 1 for _, f, k, e in segments]) if segments else 0
        _fused.active = True
        try:
            logits = self.model(
                input_ids=torch.tensor([ids], device=self.device), position_ids=positions[None].to(self.device),
                past_key_values=cache, use_cache=True, slipstream_plan=plan,
                logits_to_keep=keep.to(self.device) if segments else 0,
            ).logits[0].float().cpu()
        finally:
            _fused.active, cache.plan = False, None
        self.counters["decode_steps"] += bool(decode)
        self.counters["prefills"] += bool(joins)
        outs = []
        for r, s in enumerate(rows):
            s.length += 1
            outs.append(self._choose(s, logits[r]))
        for j, (s, k, payload) in enumerate(joins):
            s.length = len(s.prompt)
            if self.prefixes is not None:
                row = decode + j
                self.prefixes.insert(s.prompt, [(kb[row, :, : s.length].clone(), vb[row, :, : s.length].clone())
                                                for kb, vb in zip(cache.keys, cache.values)])
            outs.append(self._choose(s, logits[decode + j]))
            rows.append(s)
        done = [r for r, o in enumerate(outs) if o.finish_reason]
        for r in reversed(done):
            self._drop_row(r)
        return outs

    def _buffer_like(self) -> list[tuple[Any, Any]]:
        """Each layer's key/value shape and dtype, for a cache that has no buffers yet."""
        if self.cache.keys:
            return list(zip(self.cache.keys, self.cache.values))
        config = self.model.config.get_text_config(decoder=True)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        like = torch.empty((1, config.num_key_value_heads, 0, head_dim), dtype=self.kv_dtype, device=self.device)
        return [(like, like)] * config.num_hidden_layers

    def _take_pending(self) -> list[_Seq]:
        taken, budget = [], self.prefill_tokens
        while self.pending and (not taken or len(self.pending[0].prompt) <= budget):
            s = self.pending.pop(0)
            budget -= len(s.prompt)
            taken.append(s)
        return taken

    def _prefill(self) -> list[StepOutput]:
        fresh, outs = [], []
        for s in self._take_pending():
            k, payload = self.prefixes.lookup(s.prompt) if self.prefixes is not None else (0, None)
            if payload is None:
                fresh.append(s)
            else:
                kv, logits = self._prefill_from(s.prompt, k, payload)
                outs.append(self._join(s, kv, logits))
        if fresh:
            for s, (kv, logits) in zip(fresh, self._prefill_batch([s.prompt for s in fresh])):
                outs.append(self._join(s, kv, logits))
        self.counters["prefills"] += 1
        return outs

    def _join(self, s: _Seq, kv: list[tuple[Any, Any]], logits: Any) -> StepOutput:
        if self.prefixes is not None:
            self.prefixes.insert(s.prompt, [(k.clone(), v.clone()) for k, v in kv])
        s.length = len(s.prompt)
        out = self._choose(s, logits)
        if out.finish_reason is None:
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
