"""What every benchmark reports with: timing, percentiles, the machine, a table, the JSON result.

- `Stopwatch` (milliseconds or seconds since it started) and `Timed` (a function that remembers how long its
  last call took), both on `time.perf_counter`;
- `percentiles(values_ms)`: `{"p50_ms", "p99_ms"}`, NumPy's linear interpolation, rounded when asked;
- `machine(**extra)`: the machine in words (CPU model and count, load, platform, Python), plus a bench's own keys;
- `table(header, rows)`: a Markdown table with its columns padded, which reads aligned on a terminal too;
- `measure_import(module, runs)`: what importing `module` costs a fresh interpreter (wall and CPU seconds, peak
  memory), the median of `runs`;
- `write_result(path, results)`: the JSON result, written atomically (`deepfm_model.spec.files.write_json`),
  and a line saying where.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deepfm_model.spec.files import write_json

PROJECT_ROOT = Path(__file__).resolve().parents[3]
_IMPORT_PROBE = """
import time
started, started_cpu = time.perf_counter(), time.process_time()
import {module}
seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - started_cpu
peak_kib = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(seconds, cpu_seconds, int(peak_kib) / 1024)
"""


class Stopwatch:
    """Time since it was made (or `restart`ed)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def restart(self) -> None:
        self.started = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def ms(self) -> float:
        return self.seconds() * 1000.0


class Timed:
    """`fn` that remembers how long its last call took, in milliseconds (`last_ms`), raising or not."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self.last_ms = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        watch = Stopwatch()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.last_ms = watch.ms()


def percentiles(values_ms: Iterable[float], digits: int | None = None) -> dict[str, float]:
    """The median and 99th percentile of `values_ms` (linear interpolation), rounded to `digits` when given."""
    values = np.asarray(list(values_ms), dtype=float)
    if values.size == 0:
        raise ValueError("No timings to take percentiles of")
    p50, p99 = (float(np.percentile(values, q)) for q in (50, 99))
    if digits is not None:
        p50, p99 = round(p50, digits), round(p99, digits)
    return {"p50_ms": p50, "p99_ms": p99}


def cpu_model() -> str:
    """The CPU's model name (`/proc/cpuinfo`), else what `platform` knows of it."""
    try:
        return next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine(**extra: Any) -> dict[str, Any]:
    """The machine a benchmark ran on, and `extra` keys of the bench's own (a library's version, the device)."""
    return {
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "cpus": os.cpu_count(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        **extra,
    }


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A Markdown table, columns padded to their widest cell, which reads aligned on a terminal too.

    Cells are printed with `str`: format numbers before. `align` has an `l` or `r` per column (default: the first
    column left-aligned, the others right-aligned).
    """
    cells = [[str(c) for c in row] for row in (header, *rows)]
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header) or any(len(row) != len(header) for row in cells):
        raise ValueError(f"Every row, and `align`, needs the header's {len(header)} cells")
    widths = [max(3, *(len(row[i]) for row in cells)) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        padded = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align, strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = " | ".join(
        ":" + "-" * (w - 1) if a == "l" else "-" * (w - 1) + ":" for w, a in zip(widths, align, strict=True)
    )
    return "\n".join([line(cells[0]), f"| {rule} |", *(line(row) for row in cells[1:])])


def write_result(path: str | os.PathLike, results: dict[str, Any]) -> Path:
    """Write `results` as JSON to `path` (atomically, parents made), say where, return the path."""
    written = write_json(path, results)
    print(f"written: {written}", flush=True)
    return written


def measure_import(module: str, runs: int) -> dict[str, float]:
    """Median wall and CPU seconds of `import module` (a comma-separated list imports each in turn), and the
    interpreter's peak RSS in MiB, over `runs` fresh interpreters run from the project's root."""
    seconds, cpu_seconds, rss = [], [], []
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", _IMPORT_PROBE.format(module=module)],
            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=True, timeout=600,
        )  # fmt: skip
        wall, cpu, peak = map(float, out.stdout.split())
        seconds.append(wall)
        cpu_seconds.append(cpu)
        rss.append(peak)
    return {"seconds": statistics.median(seconds), "min_seconds": min(seconds),
            "cpu_seconds": statistics.median(cpu_seconds), "rss_mib": statistics.median(rss), "runs": runs}  # fmt: skip
