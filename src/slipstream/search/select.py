"""Choosing among measured candidates, as pure functions over :class:`~slipstream.search.record.SearchRecord`.

``objective`` is larger-is-better (the search stores cost-like objectives negated) and ``drop`` is how much
worse than the reference on the gate's metric, in the gate's units.
"""

from __future__ import annotations

from typing import Sequence

from slipstream.pareto import pareto_front
from slipstream.search.record import SearchRecord, Status


def select(records: Sequence[SearchRecord]) -> SearchRecord | None:
    """The passing record with the best objective (ties: smaller drop, then name), or None.

    The name settles exact ties (int8 and int8_float32 CTranslate2 variants of a float32 model are the
    same bytes), so the choice does not depend on which worker finished first."""
    passing = [r for r in records if r.status is Status.PASSED]
    if not passing:
        return None
    return min(passing, key=lambda r: (-r.objective, r.drop, r.name))  # type: ignore[operator]


def frontier(records: Sequence[SearchRecord]) -> list[SearchRecord]:
    """Measured records no other is better than on both the objective and accuracy."""
    measured = [r for r in records if r.objective is not None and r.drop is not None]
    return pareto_front(measured, [lambda r: r.objective, lambda r: -r.drop])  # type: ignore[operator]


def closest_misses(records: Sequence[SearchRecord], n: int = 3) -> list[SearchRecord]:
    """When nothing passes: the measured candidates that missed the gate by the least (one that holds the gate
    and misses only a guard, the KL bound, counts as missing it by nothing)."""
    missed = [r for r in records if r.status in (Status.FAILED_GATE, Status.SCREENED_OUT) and r.drop is not None]
    return sorted(missed, key=lambda r: max(r.drop - r.max_drop, 0.0))[:n]  # type: ignore[operator]
