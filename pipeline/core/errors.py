"""The one exception type for bad input, and the one helper that quotes other libraries' exceptions in it.

An `InputError`'s message is a single line the CLI and app show as is. When the problem is one argument of
a library function, the message starts with that parameter's name (``n_bootstrap -1: ...``) and
``parameter`` names it, so the command line can put its own flag (``--bootstrap``) in its place.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

SHOWN = 3  # how many offending names a message lists


class InputError(Exception):
    """Bad user input (file, CSV, image, option): the message says what is wrong and what to do.

    Parameters
    ----------
    message
        One line.
    parameter
        The library parameter at fault, when it is one (its name also opens ``message``).
    """

    def __init__(self, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


def reason(exc: BaseException, *, limit: int | None = None, all_lines: bool = False, typed: bool = False) -> str:
    """A library exception's message on one line, to quote inside an `InputError`.

    Parameters
    ----------
    limit
        Cut the text to this many characters (ending in ``...``); None keeps it whole.
    all_lines
        Join every line (pydicom lists one failure per plugin) instead of keeping the first.
    typed
        Prefix the exception's type name (``OSError: ...``), for messages whose text alone is cryptic.
    """
    text = " ".join(str(exc).split()) if all_lines else (str(exc).strip().splitlines() or [""])[0].strip()
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    if not text:
        return type(exc).__name__
    return f"{type(exc).__name__}: {text}" if typed else text


def first_items(items: Iterable[Any]) -> str:
    """The first few of ``items``, comma-separated, with ``...`` when there are more: offenders in a message."""
    items = list(items)
    return ", ".join(str(item) for item in items[:SHOWN]) + (" ..." if len(items) > SHOWN else "")
