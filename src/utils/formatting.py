"""How every table of the project writes a metric."""

from __future__ import annotations


def percent(value: float | None) -> str:
    """A metric (a fraction) in percent with two decimals, as every table shows it; NaN (a class absent from
    labels and predictions) and None as '-'."""
    return "-" if value is None or value != value else f"{100 * value:.2f}"
