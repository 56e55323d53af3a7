"""Run the otel-usecase benchmarks and print one table of figures, targets and PASS/MISS.

    .venv/bin/python benchmarks/run.py            # full run (about 10 minutes)
    .venv/bin/python benchmarks/run.py --quick    # smoke run, a few seconds per benchmark
    .venv/bin/python benchmarks/run.py --only processor --only exporter

Each benchmark runs in its own fresh interpreter (so one's heap, caches and
threads cannot disturb another's timings); its progress goes to stderr and the
table to stdout. ``--quick`` uses much smaller sizes: its figures only show
that the benchmarks work, the targets are judged on the full run. The exit
status is 1 when a target is missed or a benchmark failed, else 0.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine  # noqa: E402

BENCHMARKS = ("processor", "exporter", "receiver", "memory", "reports", "metrics", "budgets", "dashboard")
_MARK = "@@BENCH-ROWS@@ "


def _child(name: str, quick: bool) -> int:
    import importlib

    module = importlib.import_module(f"bench_{name}")
    rows = module.run(quick)
    print(_MARK + json.dumps(rows, default=str), flush=True)
    return 0


def _run_one(name: str, quick: bool) -> tuple[list[dict], float]:
    started = time.monotonic()
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", name, *(["--quick"] if quick else [])]
    done = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
    elapsed = time.monotonic() - started
    for line in done.stdout.splitlines():
        if line.startswith(_MARK):
            return json.loads(line[len(_MARK) :]), elapsed
    sys.stdout.write(done.stdout)
    return [
        {
            "bench": name,
            "metric": "benchmark failed",
            "value": f"exit status {done.returncode} (see stderr)",
            "target": "",
            "status": "FAIL",
        }
    ], elapsed


def _table(rows: list[dict]) -> str:
    header = ("benchmark", "metric", "measured", "target", "result")
    body = [(r["bench"], r["metric"], r["value"], r["target"] or "-", r["status"]) for r in rows]
    widths = [max(len(str(line[i])) for line in (header, *body)) for i in range(len(header))]
    lines = [
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(header, widths)) + " |",
        "|-" + "-|-".join("-" * w for w in widths) + "-|",
    ]
    lines += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths)) + " |" for line in body]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (small sizes, few repetitions)")
    parser.add_argument(
        "--only", action="append", metavar="NAME", help=f"run only NAME ({', '.join(BENCHMARKS)}); repeatable or comma-separated"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the rows and the machine facts as JSON")
    parser.add_argument("--child", choices=BENCHMARKS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args.child, args.quick)

    only = {n.strip() for item in args.only or () for n in item.split(",") if n.strip()}
    unknown = only - set(BENCHMARKS)
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {', '.join(sorted(unknown))}; choose from {', '.join(BENCHMARKS)}")
    names = [n for n in BENCHMARKS if not only or n in only]
    rows: list[dict] = []
    timings = []
    started = time.monotonic()
    for name in names:
        print(f"== {name} {'(quick)' if args.quick else ''}", file=sys.stderr, flush=True)
        got, elapsed = _run_one(name, args.quick)
        rows.extend(got)
        timings.append(f"{name} {elapsed:.0f} s")
    facts = machine()
    print()
    print(f"otel-usecase benchmarks ({'QUICK smoke run: reduced sizes, not the real figures' if args.quick else 'full run'})")
    print(
        f"machine: nproc {facts['nproc']}, {facts['cpu']}, {facts['python']}, SQLite {facts['sqlite']}, "
        f"{facts['postgresql']}"
    )
    print(f"packages: {facts['packages']}")
    print(f"wall time: {time.monotonic() - started:.0f} s ({', '.join(timings)})")
    print()
    print(_table(rows))
    missed = [r for r in rows if r["status"] in ("MISS", "FAIL")]
    print()
    print(f"{sum(r['status'] == 'PASS' for r in rows)} PASS, {len(missed)} MISS/FAIL, "
          f"{sum(r['status'] == 'SKIP' for r in rows)} SKIP")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": facts, "quick": args.quick, "rows": rows}, indent=2, default=str))
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
