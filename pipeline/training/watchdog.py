"""Stopping every worker of a multi-machine run, with one line, when one of them dies.

Both engines (`jax_engine`, `tf_engine`) use the same two pieces, with no TensorFlow or JAX here:

- `collective`: around the calls that talk to the other workers. When the runtime reports a failure (a
  closed connection, or its own verdict that a peer stopped sending heartbeats), the process prints one
  line and ends at once with `WATCHDOG_EXIT` (`stop`): a traceback says nothing useful, and a normal exit
  may wait in the runtime's shutdown barrier for a peer that is gone.
- `Watchdog`: a thread that writes this process's heartbeat every `HEARTBEAT_S` seconds into the key-value
  store the runtime shares between the processes, and a second thread that ends the process when a peer's
  heartbeat has not changed for `SILENT_S` seconds. The heartbeat is written by a thread, so a chief that
  spends minutes validating, saving or exporting is never taken for dead; the check runs in its own
  thread, so a store call that hangs (its server stopped) cannot hold it up. The store's server runs in
  process 0: when process 0 is gone every call fails, its heartbeat stops changing, and the others stop.

So a survivor stops within `SILENT_S` + `HEARTBEAT_S` seconds (22 s) at most, or as soon as the runtime
reports the failure in a collective, whichever comes first (docs/distributed.md has the figures).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import NoReturn

from pipeline.core.errors import InputError

HEARTBEAT_S = 2.0
SILENT_S = 20.0  # a peer silent this long counts as dead: the survivors stop within about SILENT_S + HEARTBEAT_S
WATCHDOG_EXIT = 1
KEY = "pipeline/heartbeat/{}"


def stop(why: str) -> NoReturn:
    """One line, then exit at once, skipping the runtime's shutdown (which would wait for the dead peer)."""
    print(f"error: {why}; another worker has probably stopped: restart every worker with --resume",
          file=sys.stderr, flush=True)
    os._exit(WATCHDOG_EXIT)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, at most 200 characters (its type when it has none)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


@contextlib.contextmanager
def collective(describe: Callable[[Exception], str] = first_line,
               failures: tuple[type[Exception], ...] = (Exception,)) -> Iterator[None]:
    """Around collectives of several processes: a failure of the runtime ends this process with one line.

    ``failures`` are the exceptions the runtime reports them with (any, by default); `InputError` passes
    through all the same (the loop makes every worker hear of it). ``describe`` turns one into the few
    words the line quotes.
    """
    try:
        yield
    except InputError:
        raise
    except failures as exc:
        stop(f"a collective with the other workers failed ({describe(exc)})")


class Watchdog:
    """Heartbeats through a shared key-value store; ends this process when a peer's heartbeat stops changing.

    ``put(key, value)`` overwrites a key everyone reads; ``get(key)`` answers at once with its value, or None
    when there is no news (the key missing, the store unreachable). Either may raise: a call that fails is
    no heartbeat. ``on_silent`` receives the line to stop with (default `stop`); the two intervals are
    parameters for tests only.
    """

    def __init__(self, put: Callable[[str, str], None], get: Callable[[str], str | None], index: int, count: int,
                 heartbeat_s: float = HEARTBEAT_S, silent_s: float = SILENT_S,
                 on_silent: Callable[[str], object] = stop) -> None:
        self._put, self._get = put, get
        self._index, self._count = index, count
        self._heartbeat_s, self._silent_s, self._on_silent = heartbeat_s, silent_s, on_silent
        now = time.monotonic()
        self._changed = {peer: now for peer in range(count) if peer != index}  # when each peer's beat last changed
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._threads = [threading.Thread(target=target, name=f"pipeline-watchdog-{name}", daemon=True)
                         for name, target in (("beat", self._beat), ("watch", self._watch))]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop beating and watching (training is over: peers may now leave)."""
        self._stopped.set()

    def _beat(self) -> None:
        beats, seen = 0, {}
        while not self._stopped.wait(self._heartbeat_s):
            beats += 1
            with contextlib.suppress(Exception):
                self._put(KEY.format(self._index), str(beats))
            for peer in self._changed:
                try:
                    value = self._get(KEY.format(peer))
                except Exception:
                    continue
                if value is not None and value != seen.get(peer):
                    seen[peer] = value
                    with self._lock:
                        self._changed[peer] = time.monotonic()

    def _watch(self) -> None:
        while not self._stopped.wait(self._heartbeat_s):
            now = time.monotonic()
            with self._lock:
                silent = [peer for peer, at in self._changed.items() if now - at > self._silent_s]
            if silent and not self._stopped.is_set():
                self._stopped.set()
                self._on_silent(f"worker {silent[0]} of {self._count} sent no heartbeat for {self._silent_s:.0f} s")
                return
