"""The continuous batch's key/value cache: per-layer buffers whose rows the sequences own.

Every active sequence owns one row of a preallocated buffer per layer, holding its tokens left-aligned
in columns ``0 .. length-1``. A decode step writes each row's new key/value at that row's own column,
so rows of different lengths share one forward pass without shifting memory.
"""

from __future__ import annotations

from typing import Any

from transformers.cache_utils import Cache, DynamicLayer

from slipstream.engines.torch.attention import StepPlan


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
