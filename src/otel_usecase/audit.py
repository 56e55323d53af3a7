"""Stand-in for part D's audit log (issue 16): the signature only, recording nothing.

Part E (erasure and retention) calls :func:`record` for every forget and prune; part D's module
replaces this file at merge.
"""

from __future__ import annotations

from collections.abc import Mapping

from .store import Store

__all__ = ["record"]


def record(
    store: Store, *, actor: str, action: str, use_case: str | None, target: str, detail: Mapping[str, object]
) -> None:
    """Record one event (a stand-in: does nothing until part D's audit table lands)."""
    del store, actor, action, use_case, target, detail
