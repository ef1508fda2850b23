"""The Pareto frontier of items over several objectives, as a pure function (the report draws it, the
search selects on it)."""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


def pareto_front(items: Sequence[T], better: Sequence[Callable[[T], float]]) -> list[T]:
    """Items no other item beats on every objective. Each function in ``better`` maps an item to
    a number where larger is better (negate a cost to use it)."""
    front = []
    for a in items:
        va = [f(a) for f in better]
        dominated = False
        for b in items:
            if b is a:
                continue
            vb = [f(b) for f in better]
            if all(y >= x for x, y in zip(va, vb)) and any(y > x for x, y in zip(va, vb)):
                dominated = True
                break
        if not dominated:
            front.append(a)
    return front
