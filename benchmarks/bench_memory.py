"""Benchmark 4: memory of ``UseCaseCostExporter`` over 1,000,000 distinct runs (SQLite).

Runs in a fresh subprocess (``python benchmarks/bench_memory.py --child N``) so
its peak RSS is the exporter's alone. One LLM span per run: spans are
``ReadableSpan`` objects built directly (no tracer) from 22 attribute templates
(one per model), each with a new trace id, span id and run id
(``usecase.id``), exported in batches of 512 into a SQLite store in a
temporary directory. VmRSS and VmHWM (peak) are read from /proc/self/status
after the runs at each quarter have been written.

Targets: peak RSS under 200 MB, and no growth with the number of runs once
they are written: RSS after 1M runs at most 10 MB above RSS after 250k (a
per-run leak of even 14 bytes would exceed that).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fmt_rate, log, row  # noqa: E402

NAME = "memory"
BATCH = 512
PEAK_LIMIT_MB = 200.0
GROWTH_LIMIT_MB = 10.0
_MARK = "@@MEMORY@@ "


def child(total: int) -> None:
    """Export ``total`` runs and print the RSS samples as JSON."""
    from _common import rss_mb
    from _spans import MODELS, llm_attributes, readable_llm_span, run_pool
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from otel_usecase import UseCaseCostExporter
    from otel_usecase.store import open_store

    rng = random.Random(99)
    directory = Path(tempfile.mkdtemp(prefix="otel-usecase-bench-"))
    try:
        url = f"sqlite:///{directory}/costs.db"
        exporter = UseCaseCostExporter(store=url)
        resource = Resource.create({"service.name": "bench-app"})
        scope = InstrumentationScope("opentelemetry.instrumentation.openai.v1", "0.62.4")
        templates = [llm_attributes(rng, run, model) for run, model in zip(run_pool(len(MODELS), rng), MODELS)]
        salt = f"{rng.getrandbits(32):08x}"
        marks = {total * q // 4 for q in (1, 2, 3, 4)}
        samples = []
        start_rss = rss_mb()
        now = time.time_ns() - 10**15
        trace_base = rng.getrandbits(64) << 64
        started = time.perf_counter()
        batch = []
        export_s = 0.0
        for i in range(1, total + 1):
            attributes = dict(templates[i % len(templates)])
            attributes["usecase.id"] = f"run-{salt}-{i:09d}"
            batch.append(
                readable_llm_span(
                    trace_base | i, (i << 8) | 1, attributes, now + i * 1000, resource=resource, scope=scope
                )
            )
            if len(batch) == BATCH or i in marks:
                t = time.perf_counter()
                exporter.export(batch)
                export_s += time.perf_counter() - t
                batch = []
            if i in marks:
                rss, hwm = rss_mb()
                samples.append({"runs": i, "rss": rss, "hwm": hwm, "seconds": time.perf_counter() - started})
                print(f"  {i:>9,} runs: VmRSS {rss:.1f} MB, VmHWM {hwm:.1f} MB", file=sys.stderr, flush=True)
        exporter.shutdown()  # writes everything, then closes its store
        reader = open_store(url, create=False)
        (rows,) = reader.query("SELECT COUNT(DISTINCT run_id) FROM usecase_calls")[0]
        reader.close()
        print(
            _MARK
            + json.dumps(
                {"samples": samples, "start": start_rss, "runs_in_ledger": rows, "export_s": export_s, "total": total}
            ),
            flush=True,
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run(quick: bool) -> list[dict]:
    total = 40_000 if quick else 1_000_000
    log(f"memory: {total:,} runs through the exporter in a subprocess")
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(total)], stdout=subprocess.PIPE, text=True
    )
    data = None
    for line in done.stdout.splitlines():
        if line.startswith(_MARK):
            data = json.loads(line[len(_MARK) :])
    if done.returncode != 0 or data is None:
        raise RuntimeError(f"memory child failed with exit status {done.returncode}")
    samples = data["samples"]
    peak = max(s["hwm"] for s in samples)
    growth = samples[-1]["rss"] - samples[0]["rss"]
    curve = ", ".join(f"{s['runs'] // 1000}k {s['rss']:.0f}" for s in samples)
    return [
        row(
            NAME,
            f"peak RSS (VmHWM), {total:,} runs",
            f"{peak:.1f} MB (RSS before the first export {data['start'][0]:.1f} MB)",
            f"< {PEAK_LIMIT_MB:.0f} MB",
            peak < PEAK_LIMIT_MB,
        ),
        row(
            NAME,
            f"RSS growth {samples[0]['runs'] // 1000}k -> {samples[-1]['runs'] // 1000}k runs",
            f"{growth:+.1f} MB (VmRSS MB at {curve})",
            f"≤ +{GROWTH_LIMIT_MB:.0f} MB",
            growth <= GROWTH_LIMIT_MB,
        ),
        row(
            NAME,
            "distinct runs in the ledger / exporter rate",
            f"{data['runs_in_ledger']:,} runs; {fmt_rate(data['total'] / data['export_s'])} spans in export() "
            f"(plain-dict attributes)",
            f"= {total:,}",
            data["runs_in_ledger"] == total,
        ),
    ]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(int(sys.argv[2]))
    else:
        print(f"usage: {sys.argv[0]} --child N  (use benchmarks/run.py --only memory)", file=sys.stderr)
        raise SystemExit(2)
