"""Many LoRA adapters over one base model, in one continuous batch.

Every linear layer an adapter targets is wrapped once (:class:`LoRALinear`). A step's forward pass carries,
for each of its tokens, the slot of the adapter its row uses (0: the base alone), set by the stepper
(:func:`step_slots`). Each wrapped layer computes the base's output for every token, then adds each token's
own adapter's ``scale * (x A^T) B^T``, all adapters of the step in three operations (see
:class:`LoRALinear`), as Punica and S-LoRA batch them. Rows of different adapters and of the base share the
step; the base's weights are read once for all of them.

:class:`AdapterBank` keeps at most ``max_loras`` adapters resident in the wrapped layers. A row takes its
adapter's slot when it joins the batch and gives it back when it leaves; an adapter no row uses is evicted
least recently used first, unless pinned. A row whose adapter cannot get a slot (every slot held by rows
running) waits for one, in order, without holding up the others.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

_local = threading.local()
# Above this many tokens in a step, the adapters of a layer are applied one by one to their own tokens (the
# products then grow with each token's own rank); at or below it, stacked and masked (three operations per
# layer: fewer, and for a decode step's few tokens the extra columns cost nothing).
SEGMENT_ABOVE = 64


@dataclass
class AdapterWeights:
    """One adapter's low-rank pairs, by the base's module name: (A ``[r, in]``, B ``[out, r]``, scale)."""

    name: str
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor, float]]


def load_adapter(name: str, path: Path | str, dtype: torch.dtype = torch.float32) -> AdapterWeights:
    """A PEFT LoRA directory's pairs (checked by :func:`slipstream.models.adapters.inspect_adapter`)."""
    from safetensors.torch import load_file

    from slipstream.models.adapters import WEIGHTS, inspect_adapter

    info = inspect_adapter(path)
    tensors = load_file(str(Path(path) / WEIGHTS))
    return AdapterWeights(name, {module: (tensors[a_key].to(dtype), tensors[b_key].to(dtype), info.scale(a[0]))
                                 for module, (a, _, a_key, b_key) in info.pairs.items()})


class LoRALinear(torch.nn.Module):
    """A linear layer plus the low-rank updates of the adapters resident in it, applied per token.

    For a step of few tokens (decoding), the adapters present are stacked: their A matrices one above the
    other (``[R, in]``, R the sum of their ranks) and their scaled B matrices likewise (``[R, out]``). Every
    token is multiplied by the whole stack, the columns of other adapters zeroed by a mask built once per
    step, and the result added in one more product: three operations per layer whatever the number of
    adapters. For a step of many tokens (prompts joining) each adapter's tokens are gathered, multiplied by
    its own pair and added back (:data:`SEGMENT_ABOVE`): the two forms of S-LoRA's and Punica's batched
    products."""

    def __init__(self, base: torch.nn.Module):
        super().__init__()
        self.base = base
        self.slots: dict[int, tuple[torch.Tensor, torch.Tensor, float]] = {}
        self._stacks: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def put(self, slot: int, pair: tuple[torch.Tensor, torch.Tensor, float]) -> None:
        self.slots[slot] = pair
        self._stacks.clear()

    def drop(self, slot: int) -> None:
        if self.slots.pop(slot, None) is not None:
            self._stacks.clear()

    def _stack(self, key: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        stack = self._stacks.get(key)
        if stack is None:
            pairs = [self.slots[s] for s in key]
            a = torch.cat([p[0] for p in pairs])  # [R, in]
            b = torch.cat([(p[1] * p[2]).T for p in pairs])  # [R, out], each adapter's scale folded in
            cols = torch.cat([torch.full((p[0].shape[0],), s) for s, p in zip(key, pairs)])
            stack = self._stacks[key] = (a.T.contiguous(), b.contiguous(), cols)
        return stack

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        step = getattr(_local, "step", None)
        if step is None or not self.slots:
            return out
        key = tuple(s for s in step.present(x.shape[:-1]) if s in self.slots)
        if not key:
            return out  # no adapter of this step changes this layer
        flat_x = x.reshape(-1, x.shape[-1])
        flat_out = out.view(-1, out.shape[-1])
        if len(key) > 1 and flat_x.shape[0] > SEGMENT_ABOVE:
            # many tokens (prompts joining) of several adapters: each token through its own adapter only,
            # so the products grow with its rank, not with the sum of the step's ranks
            for slot in key:
                a, b, scale = self.slots[slot]
                idx = step.rows_of(slot)
                delta = (flat_x.index_select(0, idx).to(a.dtype) @ a.T) @ b.T
                flat_out.index_add_(0, idx, (delta * scale).to(out.dtype))
            return out
        a_t, b, cols = self._stack(key)
        xa = flat_x.to(a_t.dtype) @ a_t  # [tokens, R]
        mask = step.mask(key, cols, xa.dtype)
        if mask is not None:  # tokens of other adapters (or the base) share the step
            xa = xa * mask
        flat_out.addmm_(xa.to(out.dtype), b.to(out.dtype))
        return out


class _Step:
    """One forward pass's tokens by adapter slot, worked out once and shared by every wrapped layer (they all
    see the same tokens)."""

    def __init__(self, slots: torch.Tensor):
        self.slots = slots
        self._flat: torch.Tensor | None = None
        self._present: list[int] = []
        self._masks: dict[tuple[int, ...], torch.Tensor | None] = {}
        self._rows: dict[int, torch.Tensor] = {}

    def rows_of(self, slot: int) -> torch.Tensor:
        """The indices of the tokens whose row uses ``slot``."""
        if slot not in self._rows:
            self._rows[slot] = (self._flat == slot).nonzero().squeeze(1)
        return self._rows[slot]

    def present(self, shape: torch.Size) -> list[int]:
        if self._flat is None:
            self._flat = self.slots.expand(shape).reshape(-1)
            self._present = [int(s) for s in self._flat.unique().tolist()]
        return self._present

    def mask(self, key: tuple[int, ...], cols: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
        """``[tokens, R]``: 1 where the token's adapter owns the column; None when every token uses the one
        adapter ``key`` names (nothing to mask)."""
        if key not in self._masks:
            uniform = len(self._present) == 1 and key == (self._present[0],)
            self._masks[key] = None if uniform else (self._flat[:, None] == cols[None, :]).to(dtype)
        return self._masks[key]


@contextmanager
def step_slots(slots: torch.Tensor | None) -> Iterator[None]:
    """Within this block, the wrapped layers apply each token's adapter; ``slots`` is broadcastable to the
    forward pass's token shape ([1, tokens] for a fused step, [rows, 1] for a decode or prefill batch)."""
    if slots is None:
        yield
        return
    _local.step = _Step(slots)
    try:
        yield
    finally:
        _local.step = None


class AdapterBank:
    """The adapters a model can serve (registered: name -> directory) and the ones resident in its slots."""

    def __init__(self, model: torch.nn.Module, max_loras: int = 4):
        if max_loras < 1:
            raise ValueError("max_loras must be at least 1")
        self.model, self.max_loras = model, max_loras
        self.paths: dict[str, Path] = {}
        self.pinned: set[str] = set()
        self.loaded: dict[str, AdapterWeights] = {}  # read from disk: resident, or about to be
        self.resident: OrderedDict[str, int] = OrderedDict()  # name -> slot, least recently used first
        self.users: dict[str, int] = {}  # rows holding each resident adapter's slot
        self.waiting: dict[str, int] = {}  # rows prepared for each adapter, not yet in the batch
        self.wrapped: dict[str, LoRALinear] = {}
        self.loads = self.evictions = 0

    # registry -----------------------------------------------------------------------------------
    def register(self, name: str, path: Path | str, pinned: bool = False) -> None:
        """Make ``name`` servable; its weights are read (and so checked) now, and kept if pinned."""
        if pinned and name not in self.pinned and len(self.pinned) >= self.max_loras:
            raise ValueError(f"{len(self.pinned)} adapters are pinned already, as many as max_loras "
                             f"({self.max_loras}): unpin one, or raise max_loras")
        weights = load_adapter(name, path, self._dtype())
        for module in weights.pairs:
            try:
                self._wrap(module)
            except AttributeError:
                raise ValueError(f"adapter {name!r} targets {module}, which this model does not have") from None
        self.paths[name] = Path(path)
        self.loaded[name] = weights
        if pinned:
            self.pinned.add(name)
            self._install(name)

    def unregister(self, name: str) -> None:
        busy = self.users.get(name, 0) + self.waiting.get(name, 0)
        if busy:
            raise RuntimeError(f"adapter {name!r} is in use by {busy} request(s)")
        self._evict(name)
        self.paths.pop(name, None)
        self.loaded.pop(name, None)
        self.pinned.discard(name)

    def pin(self, name: str, pinned: bool = True) -> None:
        if name not in self.paths:
            raise KeyError(name)
        if pinned:
            self.pinned.add(name)
        else:
            self.pinned.discard(name)

    def prepare(self, name: str) -> None:
        """For a row about to wait for ``name``'s slot: its weights read now and kept until it has the slot,
        so that a file gone or damaged since it was registered fails that request, never a step."""
        if name not in self.paths:
            raise KeyError(f"no adapter {name!r} is loaded")
        if name not in self.loaded:
            self.loaded[name] = load_adapter(name, self.paths[name], self._dtype())
        self.waiting[name] = self.waiting.get(name, 0) + 1

    def forget(self, name: str) -> None:
        """A prepared row that left before it took its slot."""
        self.waiting[name] -= 1
        if not self.waiting[name]:
            del self.waiting[name]

    # slots --------------------------------------------------------------------------------------
    def acquire(self, name: str) -> int | None:
        """The adapter's slot for one more row (installing it, evicting an idle one if need be), or None
        when every slot is held by running rows or pinned."""
        if name not in self.resident and not self._install(name):
            return None
        self.forget(name)
        self.resident.move_to_end(name)
        self.users[name] = self.users.get(name, 0) + 1
        return self.resident[name]

    def release(self, name: str) -> None:
        self.users[name] -= 1
        if not self.users[name]:
            del self.users[name]

    @contextmanager
    def applied(self, name: str) -> Iterator[None]:
        """Every forward pass in this block runs with ``name`` on all its tokens (scoring, evaluation)."""
        self.prepare(name)
        slot = self.acquire(name)
        if slot is None:
            self.forget(name)
            raise RuntimeError(f"no slot free for adapter {name!r}: every one is held by running rows")
        try:
            with step_slots(torch.tensor(slot)):
                yield
        finally:
            self.release(name)

    def stats(self) -> dict[str, Any]:
        return {"resident": list(self.resident), "pinned": sorted(self.pinned), "registered": sorted(self.paths),
                "loads": self.loads, "evictions": self.evictions, "max_loras": self.max_loras}

    def _install(self, name: str) -> bool:
        if len(self.resident) >= self.max_loras:
            idle = [n for n in self.resident if not self.users.get(n) and n not in self.pinned]
            if not idle:
                return False
            self._evict(idle[0])
            self.evictions += 1
        taken = set(self.resident.values())
        slot = next(s for s in range(1, self.max_loras + 2) if s not in taken)
        for module, pair in self.loaded[name].pairs.items():
            self._wrap(module).put(slot, pair)
        self.resident[name] = slot
        self.loads += 1
        return True

    def _evict(self, name: str) -> None:
        slot = self.resident.pop(name, None)
        if slot is None:
            return
        for layer in self.wrapped.values():
            layer.drop(slot)
        if name not in self.pinned and not self.waiting.get(name):
            self.loaded.pop(name, None)  # read again from disk when next wanted

    def _wrap(self, module: str) -> LoRALinear:
        layer = self.wrapped.get(module)
        if layer is None:
            parent_name, _, child = module.rpartition(".")
            parent = self.model.get_submodule(parent_name)
            base = getattr(parent, child)
            if isinstance(base, LoRALinear):
                layer = base
            else:
                layer = LoRALinear(base)
                setattr(parent, child, layer)
            self.wrapped[module] = layer
        return layer

    def _dtype(self) -> torch.dtype:
        dtype = next(self.model.parameters()).dtype
        return dtype if dtype.is_floating_point else torch.float32
