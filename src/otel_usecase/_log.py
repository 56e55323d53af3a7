"""A logger that does not flood: the same problem is reported at most once a minute.

Telemetry code sees bad data on every span once it sees it on one; a warning per
span would bury the application's own logs and cost time on the hot path.
"""

from __future__ import annotations

import logging
import time
from typing import Final

logger: Final = logging.getLogger("otel_usecase")

_INTERVAL_S: Final = 60.0
_MAX_KEYS: Final = 1024
_last: dict[str, float] = {}


def warn_rate_limited(key: str, message: str, *args: object) -> None:
    """Log ``message`` as a warning unless ``key`` was logged in the last minute."""
    now = time.monotonic()
    last = _last.get(key)
    if last is not None and now - last < _INTERVAL_S:
        return
    if len(_last) >= _MAX_KEYS:
        _last.clear()
    _last[key] = now
    logger.warning(message, *args)


def reset_rate_limits() -> None:
    """Forget what was logged (tests use it to see each warning again)."""
    _last.clear()
