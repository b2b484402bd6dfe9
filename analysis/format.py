"""Numbers as the report prints them in tables, claims and figure labels."""

from __future__ import annotations

import math

import pandas as pd


def safe_ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; inf when it divides a non-zero by an exact zero, NaN for 0 / 0."""
    if denominator != 0:
        return numerator / denominator
    return math.inf if numerator != 0 else math.nan


def format_number(value: float) -> str:
    """A number for a table: n/a, ∞, thousands with separators, else three significant digits."""
    if pd.isna(value):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def format_times(ratio: float) -> str:
    """A ratio as "12.3x"; "∞" when it divides by an exact zero, "n/a (0 / 0)" when both are zero."""
    if math.isnan(ratio):
        return "n/a (0 / 0)"
    return "∞" if math.isinf(ratio) else f"{format_number(ratio)}x"
