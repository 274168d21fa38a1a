"""A one-line terminal progress bar on stderr, shown only when stderr is a terminal.

Long steps (preparing shards, decoding an image folder, a training epoch) report through it, so a user sees
that work is going on and how fast; in logs and tests (stderr not a terminal) it stays silent.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """``bar.update(done, note)`` redraws ``title  done/total [=====>....]  rate  note``; ``bar.close()`` clears it.

    Parameters
    ----------
    title
        What is being counted, e.g. ``"epoch 3/20"``.
    total
        The count at which the work is complete.
    unit
        Shown with the rate, e.g. ``"images"`` gives ``123 images/s``.
    stream
        Where to draw (stderr by default); nothing is drawn unless it is a terminal.
    """

    def __init__(self, title: str, total: int, unit: str = "", width: int = 30, stream: TextIO | None = None) -> None:
        self.title, self.total, self.unit, self.width = title, max(int(total), 1), unit, width
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.started = time.monotonic()
        self._last_draw = 0.0

    def update(self, done: int, note: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done < self.total and now - self._last_draw < 0.1:  # at most ten redraws a second
            return
        self._last_draw = now
        done = min(int(done), self.total)
        filled = self.width * done // self.total
        bar = "=" * filled + (">" if filled < self.width else "") + "." * (self.width - filled - 1)
        rate = f"  {done / max(now - self.started, 1e-9):,.0f} {self.unit}/s" if self.unit else ""
        self.stream.write(f"\r{self.title}  {done}/{self.total} [{bar}]{rate}{'  ' + note if note else ''}\033[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()
