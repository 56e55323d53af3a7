"""Shared helpers of the benchmarks: result rows, medians, progress output, paths, machine facts."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"
BIN = Path(sys.executable).parent

# The benchmarks reuse the test helpers (tests/servers.py, tests/pg.py): make `tests` importable.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def row(
    bench: str,
    metric: str,
    value: str,
    target: str = "",
    ok: bool | None = None,
    *,
    status: str | None = None,
    raw: Any = None,
) -> dict[str, Any]:
    """One line of the result table; ``ok=None`` means informational (no target)."""
    if status is None:
        status = "INFO" if ok is None else ("PASS" if ok else "MISS")
    return {"bench": bench, "metric": metric, "value": value, "target": target, "status": status, "raw": raw}


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks."""
    data = sorted(values)
    if not data:
        return float("nan")
    pos = (len(data) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def log(message: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rss_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MB, from /proc/self/status."""
    rss = hwm = float("nan")
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return rss, hwm


def fmt_rate(per_s: float) -> str:
    if per_s >= 1e6:
        return f"{per_s / 1e6:.2f}M/s"
    if per_s >= 1e3:
        return f"{per_s / 1e3:.1f}k/s"
    return f"{per_s:.0f}/s"


def machine() -> dict[str, str]:
    """The facts README.md records next to a table."""
    from importlib.metadata import PackageNotFoundError, version

    cpu = "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    packages = []
    for name in (
        "otel-usecase",
        "opentelemetry-sdk",
        "opentelemetry-processor-baggage",
        "genai-prices",
        "protobuf",
        "grpcio",
        "uvicorn",
        "psycopg",
    ):
        try:
            packages.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            packages.append(f"{name} (not installed)")
    import sqlite3

    pg = "?"
    try:
        from tests.pg import find_bindir

        import subprocess

        pg = subprocess.run(
            [str(find_bindir() / "postgres"), "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except Exception as exc:  # noqa: BLE001 - informational only
        pg = f"not available ({type(exc).__name__})"
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": pg,
        "packages": ", ".join(packages),
    }
