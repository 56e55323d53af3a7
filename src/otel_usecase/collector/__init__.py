"""Pricing inside an OpenTelemetry Collector: OTTL for its ``transform`` processor, from the price data.

The command and what the generated statements do: :mod:`otel_usecase.collector.command`.
One job per module here: :mod:`.ottl` writes OTTL text, :mod:`.model_match` turns
genai-prices' model match rules into RE2 conditions, :mod:`.rates` gives a model's
rate per token class and how a call's counts split among them, :mod:`.statements` builds the
statements, :mod:`.plan` decides which models get one, :mod:`.render` writes the
YAML and the generated block of a collector config.
"""
