"""Dollars: per million output tokens, and per month for a stated workload.

Cost follows from measured throughput and a price per hour: a machine producing ``r`` output tokens
per second at full load costs ``price / (3600 r)`` dollars per token. The bundled price table
(``slipstream/data/prices/instances.json``) gives a few common instance types with the date and
source of each price; ``price_per_hour`` overrides it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from importlib import resources

from slipstream.errors import InvalidConfig, NotFound


@dataclass(frozen=True)
class Price:
    name: str
    price_per_hour: float
    source: str = "given on the command line"
    date: str = ""
    region: str = ""
    kind: str = ""


def price_table() -> list[dict]:
    text = (resources.files("slipstream") / "data" / "prices" / "instances.json").read_text()
    return json.loads(text)["instances"]


def resolve_price(instance: str | None = None, price_per_hour: float | None = None) -> Price:
    if price_per_hour is not None:
        if price_per_hour <= 0:
            raise InvalidConfig(f"price per hour must be positive, got {price_per_hour}")
        return Price(instance or "custom", float(price_per_hour))
    table = {row["name"]: row for row in price_table()}
    name = instance or "aws-m7g.large"
    if name not in table:
        raise NotFound(f"no price for instance {name!r}; known: {', '.join(table)} (or pass --price-per-hour)")
    row = table[name]
    return Price(name, row["price_per_hour"], row["source"], row["date"], row["region"], row["kind"])


@dataclass(frozen=True)
class Workload:
    requests_per_month: float
    output_tokens_per_request: float

    @property
    def tokens_per_month(self) -> float:
        return self.requests_per_month * self.output_tokens_per_request


def cost(tokens_per_s: float, price: Price, workload: Workload | None = None) -> dict:
    """Dollars per million output tokens at ``tokens_per_s``, and the monthly bill of ``workload``
    (whole machines, running all month, enough of them to keep up)."""
    if tokens_per_s <= 0:
        raise InvalidConfig("throughput must be positive to price it")
    per_million = price.price_per_hour / (tokens_per_s * 3600) * 1e6
    out = {"price": asdict(price), "tokens_per_s": tokens_per_s, "dollars_per_million_tokens": per_million}
    if workload:
        hours_in_month = 730.0
        busy_hours = workload.tokens_per_month / tokens_per_s / 3600
        machines = max(1, math.ceil(busy_hours / hours_in_month))
        out["workload"] = {
            **asdict(workload),
            "tokens_per_month": workload.tokens_per_month,
            "machine_hours_needed": busy_hours,
            "machines": machines,
            "monthly_cost_always_on": machines * hours_in_month * price.price_per_hour,
            "monthly_cost_busy_hours_only": busy_hours * price.price_per_hour,
        }
    return out
