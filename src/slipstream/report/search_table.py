"""What the report shows of an automatic search: its summary and one row per candidate.

The search (a layer above the report) fills these in from its records; the report only renders them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SearchRow:
    """One candidate the search measured, passing or not."""

    name: str  # the variant's name, or the recipe's label when none was built
    label: str  # the recipe
    status: str
    drop: float | None  # on the gate's metric, in its units
    ratio: float | None  # the objective against the original (side by side where confirmed)
    objective: float | None  # larger is better; orders the rows
    size_bytes: int | None
    seconds: float | None
    reason: str | None
    guards: tuple[float | None, ...] = ()  # the value on each of the table's guards, in its order


@dataclass(frozen=True)
class NotRunRow:
    label: str
    reason: str


@dataclass(frozen=True)
class SearchTable:
    summary: str
    best: str | None  # the chosen variant's name
    frontier: list[str]  # names on the search's Pareto frontier (gate metric against the objective)
    relative: bool  # the gate's drop is relative (shown in %) or absolute
    guards: tuple[str, ...] = ()  # the gates that must hold beside it, as headings ("kl_mean ≤ 0.01")
    rows: list[SearchRow] = field(default_factory=list)
    not_run: list[NotRunRow] = field(default_factory=list)
