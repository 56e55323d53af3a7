"""Price LLM spans inside an OpenTelemetry Collector: OTTL generated from the price data.

Why this exists: some teams want the cost on the span itself (``gen_ai.usage.cost``,
USD) and a cost metric out of the collector they already run, without sending
anything to ``otel-usecase serve``. The collector's ``transform`` processor can do
the arithmetic with OTTL, but someone has to write the statements for each model
with the right prices, and keep them right. This module writes them from the same
:class:`~otel_usecase.cost.prices.PriceBook` and genai-prices data the cost engine uses, and
from the token-class table (:data:`~otel_usecase.cost.token_classes.TOKEN_CLASSES`), so
that a class added to the table is read and priced without touching this code
(``tests/test_collector_config.py`` runs the generated statements on sample spans
and compares them with costs computed from the providers' published prices).

Command line (to be wired as a subcommand of ``otel-usecase``)::

    otel-usecase collector-config transform [--models gpt-4o,gpt-4o-mini ...] [--provider openai]
        [--prices FILE] [--update CONFIG.yaml | --check CONFIG.yaml]

prints the ``processors: transform/usecase_cost: ...`` YAML block (see
:func:`main`); ``--update`` rewrites the generated block of a collector config in
place, ``--check`` exits 1 when that block is stale.

What the statements do, in order, all in the ``span`` context and all with one
``where`` clause each:

1. Decide whether the span is one model call, as :func:`otel_usecase.cost.calls.is_model_call`
   does (a model ``gen_ai.operation.name``, not an agent/tool operation,
   OpenInference ``LLM``/``EMBEDDING``, or a GenAI system/provider with usage).
2. Take the model: ``gen_ai.response.model``, else ``gen_ai.request.model``, else
   ``llm.model_name``, lower-cased (genai-prices matches lower-cased names).
3. Read the token counts of the classes the plan needs (:func:`.plan.read_classes`:
   input, output, the parts step 4 normalises, any class a selected model prices,
   and the classes that need their own price) as doubles (``Double(...)``; OTTL
   arithmetic needs both sides of one type) into the per-span ``cache``, each
   from its class's ``span_keys``, first present key wins; a missing part is 0.
4. Apply :func:`otel_usecase.cost.usage.read_usage`'s two normalisations (cached parts
   added to an input count that cannot include them; a reported total that only
   adds up with them), then the engine's defaults for an unknown input or output.
5. One statement per model recognises it by name (genai-prices' own match rule
   for that model, translated to RE2, minus any known name genai-prices prices
   differently) and writes its key to ``cache["price"]``; the first match wins.
6. A span with tokens of a class that needs its own price (audio, generated
   images and video) and whose model has no rate for it gets
   ``cache["unpriced_reason"]`` (``unknown token class audio``) instead of a
   cost: priced as text it would be a silent under-count.
7. One statement per model computes the cost: each class the model prices,
   times its rate (exact decimals from the Decimal prices), for its count minus
   the parts priced at their own rate, as genai-prices decomposes usage
   (:mod:`.rates`); a part with no rate of its own stays in its parent's count.
   Counts genai-prices would refuse (a part larger than its whole) give no cost
   and the reason ``inconsistent token counts``.
8. Copy the cost to ``gen_ai.usage.cost`` (a double, USD), or the reason to
   ``usecase.cost.unpriced_reason``.

Limits, said in the generated comments too: matching is by model name only (the
provider on the span is not checked: ``--provider`` picks whose prices are used);
a tiered price uses its base tier (long prompts of such models are under-priced);
prices that change by date or time of day are the ones in force at generation;
only token usage is priced (as in the engine); a model outside the list is left
without ``gen_ai.usage.cost``.

The code is in :mod:`otel_usecase.collector`; this module is the command and the public API.
No YAML library is needed: the YAML is written as text.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..cost.prices import PriceBook, PricesFileError
from .names import current_names
from .plan import (
    COST_ATTRIBUTE,
    DEFAULT_MODELS,
    PROCESSOR_ID,
    UNPRICED_REASON_ATTRIBUTE,
    TransformPlan,
    clean_names,
    plan_transform,
    transform_statements,
)
from .render import (
    BEGIN_MARKER,
    COMMAND,
    END_MARKER,
    marker_indent,
    render_plan,
    render_transform_processor,
    update_config_text,
)
from .statements import ModelStatement

__all__ = [
    "BEGIN_MARKER",
    "COST_ATTRIBUTE",
    "DEFAULT_MODELS",
    "END_MARKER",
    "PROCESSOR_ID",
    "UNPRICED_REASON_ATTRIBUTE",
    "ModelStatement",
    "TransformPlan",
    "add_transform_arguments",
    "current_names",
    "main",
    "main_transform",
    "plan_transform",
    "render_transform_processor",
    "run_current_names",
    "run_transform",
    "transform_statements",
    "update_config_text",
]


def add_transform_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``collector-config transform`` to an argparse (sub)parser."""
    parser.add_argument(
        "--models",
        action="append",
        metavar="M1,M2",
        help=f"models to price, comma-separated, repeatable (default: {','.join(DEFAULT_MODELS)})",
    )
    parser.add_argument("--provider", metavar="P", help="whose prices to use (openai, anthropic, azure, ...)")
    parser.add_argument("--prices", metavar="FILE", help="prices TOML file (default: $OTEL_USECASE_PRICES)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--update", metavar="CONFIG", help="rewrite the generated block of this collector config in place"
    )
    where.add_argument(
        "--check", metavar="CONFIG", help="exit 1 if the generated block of this collector config is stale"
    )


def main_transform(
    models: Sequence[str] | None = None, provider: str | None = None, prices: str | None = None
) -> str:
    """The YAML ``processors:`` block that prices ``models`` (default :data:`DEFAULT_MODELS`).

    ``prices`` is an overrides TOML file (default ``$OTEL_USECASE_PRICES``).
    """
    names = clean_names(models) if models else None
    return render_transform_processor(names, provider, PriceBook(prices))


def run_transform(args: argparse.Namespace) -> int:
    """Run ``collector-config transform`` from parsed arguments; returns the exit status."""
    try:
        book = PriceBook(args.prices)
    except PricesFileError as exc:
        print(f"otel-usecase: {exc}", file=sys.stderr)
        return 2
    names = clean_names(args.models) if args.models else None
    plan = plan_transform(names, args.provider, book)
    for name, why in plan.skipped:
        print(f"otel-usecase: skipped model {name!r}: {why}", file=sys.stderr)
    if plan.skipped and not plan.models:
        print("otel-usecase: no model could be priced", file=sys.stderr)
        return 1
    path = args.update or args.check
    if path is None:
        sys.stdout.write(render_plan(plan, indent=0, processors_key=True))
        return 0
    try:
        text = Path(path).read_text(encoding="utf-8")
        block = render_plan(plan, indent=marker_indent(text), processors_key=False)
        new = update_config_text(text, block)
    except (OSError, ValueError) as exc:
        print(f"otel-usecase: {path}: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if new != text:
            print(
                f"otel-usecase: {path}: the generated transform block is stale; run with --update",
                file=sys.stderr,
            )
            return 1
        return 0
    if new != text:
        try:
            Path(path).write_text(new, encoding="utf-8")
        except OSError as exc:
            print(f"otel-usecase: {path}: {exc}", file=sys.stderr)
            return 2
    print(f"otel-usecase: {path}: {'updated' if new != text else 'already up to date'}", file=sys.stderr)
    return 0


def run_current_names(path: str) -> int:
    """``collector-config current-names FILE``: print FILE with the current component names."""
    try:
        sys.stdout.write(current_names(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        print(f"otel-usecase: {path}: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``otel-usecase collector-config transform [--models gpt-4o,gpt-4o-mini ...] [--provider openai]``.

    Prints the YAML ``processors:`` block of a ``transform/usecase_cost``
    processor whose OTTL statements write ``gen_ai.usage.cost`` (USD) on LLM
    spans, priced by the PriceBook (genai-prices plus ``--prices FILE`` or
    ``$OTEL_USECASE_PRICES``). ``--update CONFIG`` rewrites the block between the
    ``# BEGIN GENERATED`` / ``# END GENERATED`` marker lines of a collector config
    instead; ``--check CONFIG`` exits 1 when that block differs from what would be
    generated now. Models without a price are skipped with a message on stderr.

    Wiring into the ``otel-usecase`` CLI: add a ``collector-config`` parser with a
    ``transform`` subparser, call :func:`add_transform_arguments` on it, and
    dispatch to :func:`run_transform` with the parsed arguments. Run alone,
    ``python -m otel_usecase.collector.command [options]`` does the same.
    """
    parser = argparse.ArgumentParser(
        prog=COMMAND,
        description="Print OTTL (transform processor) that writes gen_ai.usage.cost on LLM spans.",
    )
    add_transform_arguments(parser)
    return run_transform(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
