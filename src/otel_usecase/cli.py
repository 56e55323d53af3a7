"""The ``otel-usecase`` command: cost reports, one run's calls, and the price a model gets."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .report.periods import PERIODS
from .report.queries import (
    FORMATS,
    GROUPINGS,
    ReportError,
    format_run,
    grouping,
    parse_since,
    parse_tag_filters,
    render_report,
    report_filter,
    run_calls,
    safe_text,
)
from .store import Store, StoreError, default_store_url, open_store, parse_store_url

__all__ = ["main"]


def _add_filter_arguments(parser: argparse.ArgumentParser, noun: str) -> None:
    """The filters ``report`` and ``runs list`` share (one definition, so they cannot drift apart)."""
    parser.add_argument("--use-case", metavar="NAME", help="only this use case")
    parser.add_argument(
        "--user", metavar="ID", help="only this user (the id the app gives; hashed as scopes hash it)"
    )
    parser.add_argument("--experience", metavar="NAME", help="only this experience (name)")
    parser.add_argument("--version", metavar="V", dest="use_case_version", help="only this use case version")
    parser.add_argument(
        "--tag",
        metavar="KEY=VALUE",
        action="append",
        dest="tags",
        help=f"only {noun} with this tag (repeatable: every one must match)",
    )
    parser.add_argument("--since", metavar="WHEN", help="24h, 7d, 30m or a date such as 2026-01-01")


def _filter_options(args: argparse.Namespace) -> dict[str, Any]:
    """The shared filters as the report functions take them (see :func:`_add_filter_arguments`)."""
    return {
        "use_case": args.use_case,
        "since": args.since,
        "user": args.user,
        "experience": args.experience,
        "version": args.use_case_version,
        "tags": args.tags,
    }


def _parser(collector_options: bool = True) -> argparse.ArgumentParser:
    """The command line. ``collector_options=False`` leaves out the options of ``collector-config
    transform``, whose module loads the price data (a quarter of a second, more than a small
    report takes); ``main`` asks for them only when that command is on the command line."""
    parser = argparse.ArgumentParser(
        prog="otel-usecase",
        description="What your LLM features cost, per use case, run, experience and user.",
    )
    parser.add_argument("--version", action="version", version=f"otel-usecase {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    store_help = "store URL (default: $OTEL_USECASE_STORE, else SQLite under ~/.local/share/otel-usecase)"

    report = commands.add_parser(
        "report", help="cost per use case, run, experience, user, model, step, version or cost source"
    )
    report.add_argument(
        "--by",
        default="use-case",
        metavar="BY",
        help=f"what one row is: {', '.join(GROUPINGS)}, tag:KEY, or a calendar period: "
        f"{', '.join(PERIODS)} (UTC unless --tz) (default use-case)",
    )
    report.add_argument("--tz", metavar="ZONE", help="time zone of --by day|week|month, e.g. Europe/Paris")
    report.add_argument("--limit", metavar="N", type=int, help="only the N most expensive rows")
    _add_filter_arguments(report, "calls")
    report.add_argument("--format", default="table", choices=FORMATS)
    report.add_argument(
        "--per-outcome",
        metavar="NAME",
        help="cost per outcome NAME (record_outcome) per group: the runs' cost / the outcome's sum; "
        "--by use-case, version, experience or user",
    )
    report.add_argument("--store", metavar="URL", help=store_help)

    runs = commands.add_parser("runs", help="look at single runs")
    runs_commands = runs.add_subparsers(dest="runs_command", required=True, metavar="COMMAND")
    show = runs_commands.add_parser("show", help="the calls of one run")
    show.add_argument("run_id", metavar="ID")
    show.add_argument("--format", default="table", choices=("table", "json", "csv"))
    show.add_argument("--store", metavar="URL", help=store_help)
    listing = runs_commands.add_parser("list", help="runs, newest first (the report's filters)")
    _add_filter_arguments(listing, "runs")
    listing.add_argument(
        "--order", default="newest", choices=("newest", "cost"), help="newest (default) or cost"
    )
    listing.add_argument("--limit", metavar="N", type=int, default=50, help="runs per page (default 50)")
    listing.add_argument("--offset", metavar="N", type=int, default=0, help="runs to skip (default 0)")
    listing.add_argument("--format", default="table", choices=("table", "json", "csv"))
    listing.add_argument("--store", metavar="URL", help=store_help)

    prices = commands.add_parser("prices", help="the price that would be applied to a model, and its source")
    prices.add_argument("model", metavar="MODEL")
    prices.add_argument(
        "--provider", metavar="P", help="provider as the instrumentation names it (openai, ...)"
    )
    prices.add_argument("--prices", metavar="FILE", help="prices TOML file (default: $OTEL_USECASE_PRICES)")
    reprice = commands.add_parser(
        "reprice", help="price stored calls again from their token counts (new prices, an overrides change)"
    )
    reprice.add_argument(
        "--since", metavar="WHEN", help="only calls since: 24h, 7d, 30m or a date (2026-01-01)"
    )
    reprice.add_argument("--use-case", metavar="NAME", help="only this use case")
    reprice.add_argument("--only-unpriced", action="store_true", help="only calls stored unpriced")
    reprice.add_argument("--dry-run", action="store_true", help="print what would change, write nothing")
    reprice.add_argument("--format", default="table", choices=("table", "json"))
    reprice.add_argument("--store", metavar="URL", help=store_help)
    reprice.add_argument("--prices", metavar="FILE", help="prices TOML file (default: $OTEL_USECASE_PRICES)")
    serve = commands.add_parser(
        "serve", help="OTLP receiver (HTTP and gRPC) that prices LLM spans into the store"
    )
    serve.add_argument(
        "--http", default="127.0.0.1:4318", metavar="HOST:PORT", help="OTLP/HTTP address or off"
    )
    serve.add_argument(
        "--grpc", default="127.0.0.1:4317", metavar="HOST:PORT", help="OTLP/gRPC address or off"
    )
    serve.add_argument("--store", metavar="URL", help=store_help)
    serve.add_argument("--prices", metavar="FILE", help="prices TOML file (default: $OTEL_USECASE_PRICES)")
    serve.add_argument(
        "--token", metavar="TOKEN", help="require Authorization: Bearer TOKEN (default: $OTEL_USECASE_TOKEN)"
    )
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        default=16 * 1024 * 1024,
        metavar="N",
        help="largest request body, after decompression (default 16 MiB)",
    )
    serve.add_argument(
        "--read-timeout",
        type=float,
        metavar="SECONDS",
        help="time a client has for a request's headers, and again for its body, before the connection is "
        "closed (default: $OTEL_USECASE_READ_TIMEOUT, else 30)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="threads per protocol that decode, price and write (default 1: that work holds Python's GIL and "
        "the store takes one writer at a time; raise it only for a store with a slow network round trip)",
    )

    serve.add_argument(
        "--ui", action="store_true", help="also serve the dashboard at /ui/ on the OTLP/HTTP address"
    )
    ui = commands.add_parser("ui", help="a local cost dashboard in the browser (read-only)")
    ui.add_argument("--store", metavar="URL", help=store_help)
    ui.add_argument(
        "--listen", default="127.0.0.1:8800", metavar="HOST:PORT", help="address (default 127.0.0.1:8800)"
    )
    ui.add_argument(
        "--token-file",
        metavar="FILE",
        help="require this file's token (Authorization: Bearer, or as the browser's password); "
        "default: $OTEL_USECASE_TOKEN; needed to listen on a non-loopback address",
    )

    from .budgets.cli import add_arguments as add_budget_arguments

    add_budget_arguments(commands, store_help)

    from .access.cli import add_arguments as add_access_arguments

    add_access_arguments(commands, store_help)  # tokens (usecases share: in the usecases group)

    from .usecases.cli import add_arguments as add_definition_arguments

    add_definition_arguments(commands, store_help)

    collector = commands.add_parser("collector-config", help="OpenTelemetry Collector configuration helpers")
    collector_commands = collector.add_subparsers(
        dest="collector_config_command", required=True, metavar="COMMAND"
    )
    transform = collector_commands.add_parser(
        "transform", help="OTTL statements that price LLM spans in a collector"
    )
    if collector_options:
        from .collector import command as collector_config

        collector_config.add_transform_arguments(transform)
    renamed = collector_commands.add_parser(
        "current-names",
        help="print a collector config with the component names current collector releases use "
        "(otlp_grpc, otlp_http, load_balancing, filter trace_conditions)",
    )
    renamed.add_argument("config", metavar="CONFIG")
    return parser


def _serve(args: argparse.Namespace) -> int:
    """``otel-usecase serve``: 2 for options that cannot work, 1 when it cannot start (nothing announced)."""
    try:
        from .serve.server import ServeOptions, parse_address, run
    except ImportError as exc:  # server.py imports every module of the extra up front
        print(
            f"otel-usecase: serve needs the 'serve' extra ({exc.name or exc} is missing): "
            "pip install 'otel-usecase[serve]'",
            file=sys.stderr,
        )
        return 1
    if (
        args.max_body_bytes <= 0
        or args.workers <= 0
        or (args.read_timeout is not None and args.read_timeout <= 0)
    ):
        print(
            "otel-usecase: --max-body-bytes, --workers and --read-timeout must be positive", file=sys.stderr
        )
        return 2
    try:
        options = ServeOptions(
            http=parse_address(args.http, "http"),
            grpc=parse_address(args.grpc, "grpc"),
            store=args.store,
            prices=args.prices,
            token=args.token,
            max_body_bytes=args.max_body_bytes,
            read_timeout=args.read_timeout,
            workers=args.workers,
            ui=args.ui,
        )
        return run(options)
    except ValueError as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 2
    except (OSError, StoreError) as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 1


def _ui(args: argparse.Namespace) -> int:
    """``otel-usecase ui``: 2 for options that cannot work, 1 when it cannot start."""
    try:
        import uvicorn  # noqa: F401

        from .serve.server import parse_address
        from .ui.server import UIOptions, read_token_file, run
    except ImportError as exc:
        print(
            f"otel-usecase: ui needs the 'serve' extra ({exc.name or exc} is missing): "
            "pip install 'otel-usecase[serve]'",
            file=sys.stderr,
        )
        return 1
    try:
        listen = parse_address(args.listen, "listen")
        if listen is None:
            raise ValueError("--listen off: nothing to serve")
        token = read_token_file(args.token_file) if args.token_file else None
        url = args.store or default_store_url()
        try:
            parse_store_url(url)
        except StoreError as exc:
            raise ValueError(str(exc)) from None
        return run(UIOptions(listen=listen, store=url, token=token))
    except ValueError as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 2
    except (OSError, StoreError) as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 1


def _per_million(value: object) -> str:
    return "-" if value is None else f"${value} per 1M tokens"


def _prices(args: argparse.Namespace) -> int:
    """``otel-usecase prices``: the price a model gets (imports the price data only here)."""
    from .cost.prices import PriceBook, PricesFileError
    from .cost.token_classes import TOKEN_CLASSES

    try:
        book = PriceBook(args.prices)
        price = book.lookup(args.model, args.provider)
        if price is None:
            print(
                f"no price for model {args.model!r}"
                + (f" at provider {args.provider!r}" if args.provider else "")
                + f" in genai-prices {book.genai_prices_version}"
                + (f" or {book.overrides_path}" if book.overrides_path else "")
                + "; its calls would be stored as unpriced",
                file=sys.stderr,
            )
            return 1
        print(f"model            {price.model}")
        print(f"provider         {price.provider or '-'}")
        for token_class in TOKEN_CLASSES:  # every class with its own rate; the others fall back
            if token_class.name in price.rates or token_class.name in ("input", "output"):
                label = token_class.name.replace("_", " ")
                print(f"{label:<16} {_per_million(price.rates.get(token_class.name))}")
        if price.per_request is not None:
            print(f"per request      ${price.per_request}")
        if price.tiered:
            print("tiers            yes (the prices above are the base tier)")
        print(f"source           {price.source}")
        if price.detail:
            print(f"detail           {price.detail}")
        return 0
    except PricesFileError as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 2


def _read(args: argparse.Namespace) -> int:
    """``report`` and ``runs show``: read the store, never create it.

    A store that does not exist is an error naming the URL (exit 1), not an empty
    report: a forgotten ``OTEL_USECASE_STORE`` must not read as "no calls recorded".
    Every output says which store it read: a header line above a table; for JSON
    and CSV, whose stdout stays machine-readable, a line on stderr.
    """
    url = args.store or default_store_url()
    parse_store_url(url)  # a malformed URL or --since is a usage error (exit 2), before anything is opened
    if args.command == "report" or getattr(args, "runs_command", None) == "list":
        parse_since(args.since)
        parse_tag_filters(args.tags)
    if args.command == "report" and args.by not in PERIODS:
        grouping(args.by)
    try:
        store = open_store(url, create=False)
    except StoreError as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 1
    try:
        if args.command == "report" and args.per_outcome is not None:
            from .report.outcomes import render_outcomes

            text = render_outcomes(
                store,
                args.per_outcome,
                args.by,
                args.format,
                **_filter_options(args),
            )
        elif args.command == "report":
            text = render_report(
                store,
                args.by,
                args.format,
                **_filter_options(args),
                limit=args.limit,
                tz=args.tz,
            )
        elif args.runs_command == "list":
            text = _runs_list(store, args)
        else:
            calls = run_calls(store, args.run_id)
            if not calls:
                print(
                    f"otel-usecase: no run {safe_text(args.run_id)!r} in store {safe_text(store.url, limit=1000)}",
                    file=sys.stderr,
                )
                return 1
            text = format_run(args.run_id, calls, args.format, outcomes=store.run_outcomes(args.run_id))
    except StoreError as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if args.format == "table":
        print(f"store {safe_text(store.url, limit=1000)}")
    else:
        print(f"otel-usecase: read store {safe_text(store.url, limit=1000)}", file=sys.stderr)
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `otel-usecase report | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _runs_list(store: Store, args: argparse.Namespace) -> str:
    """``runs list``: a page of :func:`~otel_usecase.report.views.list_runs` (what the dashboard lists)."""
    from .report.runs_list import format_runs
    from .report.views import list_runs

    filters = report_filter(**_filter_options(args))
    return format_runs(list_runs(store, filters, args.order, args.limit, args.offset), args.format)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status.

    Exit status: 0 done, 1 the store could not be read (missing, not a ledger,
    unavailable) or the run asked for is not in it, 2 a usage error (bad option or URL).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser(collector_options="collector-config" in argv).parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "ui":
        return _ui(args)
    if args.command == "collector-config":
        from .collector import command as collector_config

        if args.collector_config_command == "current-names":
            return collector_config.run_current_names(args.config)
        return collector_config.run_transform(args)
    access_run = getattr(args, "access_run", None)  # tokens, usecases share (access/cli.py)
    if access_run is not None:
        return int(access_run(args))
    if args.command == "budgets":
        from .budgets.cli import run as run_budgets

        return run_budgets(args)
    if args.command in ("usecases", "experience-types", "audit"):
        from .usecases import cli as definitions

        if args.command == "usecases":
            return definitions.run_usecases(args)
        if args.command == "experience-types":
            return definitions.run_experience_types(args)
        return definitions.run_audit(args)
    if args.command == "reprice":
        from .cost import reprice

        return reprice.run(args)
    try:
        if args.command == "prices":
            return _prices(args)
        return _read(args)
    except (StoreError, ReportError) as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
