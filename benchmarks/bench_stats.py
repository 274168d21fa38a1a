"""Time `stats` and `leakage` on the full 112,120-row NIH metadata, against their targets.

Targets (issue #2): stats in under 2 s, leakage in well under 1 s, on a 2-core machine.
Prints each time and its ratio to the target (below 1.0 means the target is met).
Run from the repository root: .venv/bin/python -m benchmarks.bench_stats
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

from pipeline.data import label_files, leakage, stats

METADATA = Path(__file__).resolve().parent.parent / "nih" / "metadata" / "Data_Entry_2017_v2020.csv.gz"
TEST_LIST = METADATA.parent / "test_list.txt.gz"


def best_of(repeats: int, func) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}")
    load = best_of(3, lambda: label_files.load_labels(METADATA))
    table = label_files.load_labels(METADATA)
    summarize = best_of(3, lambda: stats.summarize(table))
    total = load + summarize
    print(f"stats (load + summarize) on {len(table):,} rows: {total:.2f} s "
          f"(load {load:.2f} s, summarize {summarize:.2f} s); ratio to 2 s target: {total / 2:.2f}")

    test_names = set(leakage._read_list(TEST_LIST))
    test = table[table["Image"].isin(test_names)]
    check = best_of(5, lambda: leakage.leakage_report(table, test))
    print(f"leakage check, {len(table):,} vs {len(test):,} rows: {check * 1000:.0f} ms; "
          f"ratio to 1 s target: {check:.3f}")


if __name__ == "__main__":
    main()
