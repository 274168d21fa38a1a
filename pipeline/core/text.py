"""Counts in words: ``1 image``, ``2 images``, so that no message says "1 images" or "1 processes"."""

from __future__ import annotations

_IRREGULAR = {"process": "processes", "patient": "patients", "box": "boxes", "does": "do", "is": "are", "has": "have"}


def plural(n: int, singular: str, many: str | None = None) -> str:
    """``singular`` for 1, else its plural (``many``, a known irregular form, or ``singular + "s"``)."""
    if n == 1:
        return singular
    return many or _IRREGULAR.get(singular, singular + "s")


def count(n: int, singular: str, many: str | None = None) -> str:
    """``n`` with thousands separators and the noun agreeing with it: ``1 image``, ``1,024 images``."""
    return f"{n:,} {plural(n, singular, many)}"
