"""Choosing among measured candidates, as pure functions over plain records.

A record is a dict with at least ``name``, ``status`` ("passed", "failed_gate", "error", ...),
``objective`` (larger is better; the search stores cost-like objectives negated) and ``drop``
(how much worse than the reference on the gate's metric, in the gate's units).
"""

from __future__ import annotations

from typing import Any, Sequence

from slipstream.pareto import pareto_front

Record = dict[str, Any]


def select(records: Sequence[Record]) -> Record | None:
    """The passing record with the best objective (ties: smaller drop, then name), or None.

    The name settles exact ties (int8 and int8_float32 CTranslate2 variants of a float32 model are the
    same bytes), so the choice does not depend on which worker finished first."""
    passing = [r for r in records if r.get("status") == "passed"]
    if not passing:
        return None
    return min(passing, key=lambda r: (-r["objective"], r["drop"], r["name"]))


def frontier(records: Sequence[Record]) -> list[Record]:
    """Measured records no other is better than on both the objective and accuracy."""
    measured = [r for r in records if r.get("objective") is not None and r.get("drop") is not None]
    return pareto_front(measured, [lambda r: r["objective"], lambda r: -r["drop"]])


def closest_misses(records: Sequence[Record], n: int = 3) -> list[Record]:
    """When nothing passes: the measured candidates that missed the gate by the least."""
    missed = [r for r in records if r.get("status") in ("failed_gate", "screened_out") and r.get("drop") is not None]
    return sorted(missed, key=lambda r: r["drop"] - r["max_drop"])[:n]
