"""Small statistics helpers shared by the benchmarks."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def percentiles(values: Sequence[float], qs: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    if not len(values):
        return {f"p{q}": float("nan") for q in qs}
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{q}": float(np.percentile(arr, q)) for q in qs}


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, spread (min, max, interquartile range) and count of repeated measurements."""
    arr = np.asarray(values, dtype=np.float64)
    if not arr.size:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "iqr": float("nan"), "n": 0}
    q1, med, q3 = np.percentile(arr, [25, 50, 75])
    return {"median": float(med), "min": float(arr.min()), "max": float(arr.max()), "iqr": float(q3 - q1),
            "n": int(arr.size)}
