"""Attention for the transformers engine's continuous batch (:mod:`.stepper`).

Two paths, registered with transformers' attention interface under :data:`ROWS_ATTENTION`:

- :func:`grouped_decode_attention`: one new token per row, grouped-query heads read straight from the
  row cache (a decode step that is not fused).
- a fused step (:class:`StepPlan`): the decode rows' tokens and newcomers' prompt tokens in one forward
  pass; decode rows attend in contiguous groups (:func:`row_groups`) or through the C kernel
  (:mod:`.kernels.decode_attention`), each prompt segment causally over its own row.

The masks of a fused step travel in its plan; transformers' own masks are skipped while one runs
(:func:`plan_masks`).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from slipstream.engines.torch.kernels import decode_attention

ROWS_ATTENTION = "slipstream_rows"
# Architectures whose attention layers call the attention interface with every keyword the model was
# given (the step plan travels that way) and whose only masks are causal and sliding-window: checked
# token for token against generate() in tests/engines/test_stepping.py.
FUSED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma3_text"})
_fused = threading.local()  # set while a fused step runs on this thread: transformers' masks are skipped


@contextmanager
def plan_masks() -> Iterator[None]:
    """While a fused step runs on this thread, its plan carries the masks (transformers' are skipped)."""
    _fused.active = True
    try:
        yield
    finally:
        _fused.active = False


def row_groups(lengths: Sequence[int], overhead: int = 96, max_groups: int = 8) -> list[tuple[int, int]]:
    """Split rows ``0 .. len(lengths)-1`` into contiguous groups whose attention runs separately.

    One call over every row pads each row to the longest one: a single 400-token prompt among rows of
    100 makes the whole batch read 400 columns. A group costs ``rows x (its longest length + 1)``
    column reads plus ``overhead`` (a call's fixed cost, in the same units: PyTorch's fused attention on
    one CPU core costs about as much per call as reading several dozen row-columns, at SmolLM2's 9 query
    and 3 key/value heads); cuts are added greedily, the one that saves most first, while they save more
    than they cost. On a served batch whose prompts differ in length, the grouped decode steps are
    shorter than one group's."""
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
    c_kernel: bool = True  # decode rows through the C kernel where it applies (engine option decode_attention)

    @classmethod
    def build(cls, lengths: Sequence[int], segments: list[tuple[int, int, int, int]], positions: Any,
              c_kernel: bool = True) -> "StepPlan":
        """``lengths``: the decode rows' tokens in cache (the new token goes to that column)."""
        groups, group_masks = [], []
        for a, b in row_groups(lengths) if len(lengths) else []:
            width = max(lengths[a:b]) + 1
            groups.append((a, b, width))
            group_masks.append(torch.arange(width)[None, :] <= positions[a:b, None])
        masks = [torch.arange(end)[None, :] <= torch.arange(start, end)[:, None] for _, _, start, end in segments]
        return cls(len(lengths), groups, group_masks, segments, masks, positions, c_kernel)

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


def fused_attention(query: Any, key: Any, value: Any, plan: StepPlan, scaling: float | None,
                     window: int | None) -> tuple[Any, None]:
    """Attention for a :class:`StepPlan`: ``query`` is ``[1, heads, tokens, dim]``, ``key``/``value`` the
    whole row buffers ``[rows, kv_heads, columns, dim]`` with this step's keys/values already written."""
    sdpa = torch.nn.functional.scaled_dot_product_attention
    group_masks, segment_masks = plan.masks(window)
    dtype = query.dtype
    query = query.to(key.dtype)  # a cache kept in another dtype (kv_cache_dtype): attend in that dtype
    parts = []
    if plan.decode and plan.c_kernel and key.dtype == torch.float32 and decode_attention.available():
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
    once for its group of query heads (``enable_gqa``), from the cache rows in place, a little faster than
    the same arithmetic as batched matrix products (this function's earlier form). At 16 rows it is still
    a large part of a W8A8 decode step: the float32 keys and values are read from memory once per step
    (SmolLM2's 30 layers at 16 rows of 200 columns: about 150 MB; figures:
    docs/engines.md#decode-attention). Prefill (more than one query token) and models without grouped
    heads go to transformers' SDPA path unchanged.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plan = kwargs.get("slipstream_plan")
    if plan is not None:
        return fused_attention(query, key, value, plan, scaling, kwargs.get("sliding_window"))
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


def use_grouped_attention(model: Any) -> None:
    """Switch an SDPA model to :func:`grouped_decode_attention` (same masks, same prefill path)."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ROWS_ATTENTION, grouped_decode_attention)
    AttentionMaskInterface.register(ROWS_ATTENTION, _rows_mask)
    model.set_attn_implementation(ROWS_ATTENTION)
