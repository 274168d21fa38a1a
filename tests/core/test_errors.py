"""`pipeline.core.errors`: other libraries' exceptions quoted on one line, offenders listed briefly."""

from __future__ import annotations

from pipeline.core.errors import InputError, first_items, reason


def test_reason_keeps_the_first_line_or_joins_them():
    exc = ValueError("first line\n  second line\n")
    assert reason(exc) == "first line"
    assert reason(exc, all_lines=True) == "first line second line"
    assert reason(exc, typed=True) == "ValueError: first line"


def test_reason_cuts_long_text_and_names_an_empty_exception():
    assert reason(OSError("x" * 50), limit=10) == "xxxxxxx..."
    assert reason(KeyError()) == "KeyError"
    assert reason(RuntimeError("   ")) == "RuntimeError"


def test_first_items_lists_three_then_dots():
    assert first_items(["a.png", "b.png"]) == "a.png, b.png"
    assert first_items(range(5)) == "0, 1, 2 ..."
    assert first_items([]) == ""


def test_input_error_carries_its_parameter():
    exc = InputError("`n_bootstrap` must be 0 or more", parameter="n_bootstrap")
    assert str(exc) == "`n_bootstrap` must be 0 or more" and exc.parameter == "n_bootstrap"
    assert InputError("plain").parameter is None
