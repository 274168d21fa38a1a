"""`pipeline.core.progress`: a bar on a terminal, nothing in logs."""

from __future__ import annotations

import io

from pipeline.core.progress import ProgressBar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_draws_count_bar_rate_and_note_then_clears():
    stream = Terminal()
    bar = ProgressBar("decoding", 10, unit="images", width=10, stream=stream)
    bar.update(10, "done")
    drawn = stream.getvalue()
    assert drawn.startswith("\rdecoding  10/10 [==========]") and "images/s  done" in drawn
    bar.close()
    assert stream.getvalue().endswith("\r\033[K")


def test_half_way_and_over_the_total():
    stream = Terminal()
    bar = ProgressBar("epoch 1/2", 4, width=4, stream=stream)
    bar.update(2)
    assert "2/4 [==>.]" in stream.getvalue()
    bar._last_draw = 0.0
    bar.update(9)  # counts past the total show as complete
    assert "4/4 [====]" in stream.getvalue()


def test_nothing_is_written_when_stderr_is_not_a_terminal():
    stream = io.StringIO()
    bar = ProgressBar("decoding", 10, stream=stream)
    bar.update(5)
    bar.close()
    assert stream.getvalue() == ""
