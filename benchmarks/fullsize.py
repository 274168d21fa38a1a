"""Helpers the full-size input benchmarks share: a linked copy of the NIH layout, and a process-tree RSS sampler.

The six full-size NIH originals in ``/work/shared/nih-sample/originals`` (or ``$CHESTXRAY_ORIGINALS``) stand
for the whole set: each metadata row's ``Image Index`` becomes a symbolic link to one of them, in turn, so a
folder has the real names, sizes and PNG variants (two originals are RGBA) of full-size NIH images. The six
files stay in the page cache, so these benchmarks measure decoding, not disk reads.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
METADATA = REPO / "nih" / "metadata" / "Data_Entry_2017_v2020.csv.gz"
ORIGINALS = Path(os.environ.get("CHESTXRAY_ORIGINALS", "/work/shared/nih-sample/originals"))
PAGE = os.sysconf("SC_PAGE_SIZE")


def originals() -> list[Path]:
    found = sorted(ORIGINALS.glob("*.png"))
    if not found:
        raise SystemExit(f"{ORIGINALS}: no full-size PNG; set CHESTXRAY_ORIGINALS to a folder of NIH originals")
    return found


def link_layout(folder: Path, rows: int | None = None) -> pd.DataFrame:
    """Link the first ``rows`` (all when None) metadata names in ``folder`` to the originals; return those rows."""
    table = pd.read_csv(METADATA)
    table = table if rows is None else table.head(rows)
    sources = originals()
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(table["Image Index"]):
        link = folder / name
        if not link.is_symlink():
            os.symlink(sources[k % len(sources)], link)
    return table


def tree_rss(root: int) -> int:
    """Bytes resident in process ``root`` and all its descendants now (from /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/statm") as f:
                resident = int(f.read().split()[1]) * PAGE
        except OSError:
            continue
        pid = int(entry)
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        rss[pid] = resident
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sum(rss.get(pid, 0) for pid in tree)


class TreeSampler:
    """Samples the RSS of a process tree every ``interval`` seconds in a thread; keeps the peak and the load."""

    def __init__(self, root: int, interval: float = 0.25) -> None:
        self.root, self.interval = root, interval
        self.peak = 0
        self.loads: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        last_load = 0.0
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.root))
            if time.monotonic() - last_load > 5:
                self.loads.append(os.getloadavg()[0])
                last_load = time.monotonic()
            self._stop.wait(self.interval)

    @property
    def mean_load(self) -> float:
        return sum(self.loads) / len(self.loads) if self.loads else os.getloadavg()[0]


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
