"""Small statistics helpers."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float], qs: Sequence[float] = (50, 95, 99), scale: float = 1.0,
            digits: int = 1) -> dict[str, float | int | None]:
    """{"n", "p50", "p95", ..., "max"} of `values` times `scale`, rounded."""
    out: dict[str, float | int | None] = {"n": len(values)}
    for q in qs:
        value = percentile(values, q)
        out[f"p{q:g}"] = None if value is None else round(value * scale, digits)
    out["max"] = round(max(values) * scale, digits) if values else None
    return out


def ratio(numerator: float, denominator: float, digits: int = 2) -> float | None:
    return round(numerator / denominator, digits) if denominator else None
