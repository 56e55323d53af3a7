"""Provider-billed cost on a span (placeholder until the pricing branch's version is merged).

``billed_cost(attributes)``: the USD figure the provider or gateway billed, or None;
``BILLED_KEYS``: the span keys it reads. See /work/coord/v2.md section 4.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["BILLED_KEYS", "billed_cost"]

BILLED_KEYS: Final[frozenset[str]] = frozenset()


def billed_cost(attributes: Mapping[str, Any]) -> float | None:
    """The cost the provider billed for this call, or None (none recorded on the span)."""
    return None
