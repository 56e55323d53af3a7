"""Benchmark: exporter throughput with cost metrics on and off, side by side.

The spans and the exporter run are the exporter benchmark's (``bench_exporter``:
real SDK ``ReadableSpan``s, batches of 512, every repetition into a new SQLite
file). "on": a global SDK ``MeterProvider`` (with an in-memory reader, collected
after each repetition, as a scrape or the export interval would) is set before the
exporter is built, so the exporter subscribes its cost metrics the way it does
under ``opentelemetry-instrument``; "off": the same exporter built with
``OTEL_USECASE_METRICS=false``. The spans cover 10 use cases x 12 versions x 4
steps x 22 models: a batch has hundreds of attribute sets, the worst case for a
per-batch ``Counter.add``. On and off alternate; the figure is the median of
per-repetition ratios. The collection (the SDK reading every total) is timed apart.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from _common import fmt_rate, log, median, row
from bench_exporter import BATCH, build_spans, time_exporter
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_usecase.cost.prices import PriceBook

NAME = "metrics"


def calls_counted(reader: InMemoryMetricReader) -> tuple[float, float]:
    """(calls in ``usecase.calls``, seconds the collection took)."""
    started = time.perf_counter()
    data = reader.get_metrics_data()
    elapsed = time.perf_counter() - started
    total = 0.0
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == "usecase.calls":
                    total += sum(p.value for p in metric.data.data_points)  # type: ignore[union-attr]
    return total, elapsed


def timed(metrics_on: bool, batches: list, prices: PriceBook, directory: Path) -> tuple[float, float]:
    if metrics_on:
        os.environ.pop("OTEL_USECASE_METRICS", None)
    else:
        os.environ["OTEL_USECASE_METRICS"] = "false"
    wall, cpu, written = time_exporter(batches, prices, directory)
    n = sum(len(b) for b in batches)
    if written != n:
        raise AssertionError(f"exporter wrote {written} rows for {n} distinct LLM spans")
    return wall, cpu


def run(quick: bool) -> list[dict]:
    rng = random.Random(42)
    n_batches = 6 if quick else 40
    reps = 3 if quick else 9
    log(f"metrics: building {n_batches * BATCH} SDK spans")
    spans = build_spans(n_batches * BATCH, rng)
    batches = [spans[i : i + BATCH] for i in range(0, len(spans), BATCH)]
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    prices = PriceBook()
    directory = Path(tempfile.mkdtemp(prefix="otel-usecase-bench-"))
    try:
        timed(True, batches[:2], prices, directory)  # warm-up both
        timed(False, batches[:2], prices, directory)
        counted, _ = calls_counted(reader)
        on_wall, off_wall, on_cpu, off_cpu, ratios, collections = [], [], [], [], [], []
        log(f"metrics: {reps} repetitions of {len(spans)} spans through the exporter, metrics on and off")
        for i in range(reps):
            for metrics_on in (True, False) if i % 2 == 0 else (False, True):
                wall, cpu = timed(metrics_on, batches, prices, directory)
                (on_wall if metrics_on else off_wall).append(wall)
                (on_cpu if metrics_on else off_cpu).append(cpu)
                if metrics_on:
                    now, collection = calls_counted(reader)
                    if now - counted != len(spans):
                        raise AssertionError(f"usecase.calls rose by {now - counted} for {len(spans)} calls")
                    counted = now
                    collections.append(collection)
            ratios.append(off_wall[-1] / on_wall[-1])
    finally:
        os.environ.pop("OTEL_USECASE_METRICS", None)
        shutil.rmtree(directory, ignore_errors=True)

    ratio = median(ratios)
    cpu_extra = median(on_cpu) - median(off_cpu)
    return [
        row(
            NAME,
            "exporter into SQLite, metrics off",
            f"{fmt_rate(1 / median(off_wall))} spans ({median(off_wall) * 1e6:.1f} µs/span; CPU {median(off_cpu) * 1e6:.1f} µs/span)",
        ),
        row(
            NAME,
            "exporter into SQLite, metrics on",
            f"{fmt_rate(1 / median(on_wall))} spans ({median(on_wall) * 1e6:.1f} µs/span; CPU {median(on_cpu) * 1e6:.1f} µs/span)",
        ),
        row(
            NAME,
            "throughput with metrics on / off",
            f"{ratio * 100:.1f} % (CPU of the export thread {cpu_extra * 1e6:+.1f} µs/span)",
            "≥ 90 %",
            ratio >= 0.90,
        ),
        row(
            NAME,
            "one collection of every total (SDK reads them)",
            f"{median(collections) * 1e3:.1f} ms",
        ),
    ]
