"""Scopes and what travels with them: the keys, W3C baggage propagation and its trust rules,
the name and id rules, user-id hashing, and the context hand-off to threads.

The data path starts here: ``track_context`` / ``@track`` put a use case, run, experience and
user into the OpenTelemetry context as baggage; :mod:`otel_usecase.processor` reads them back.
"""
