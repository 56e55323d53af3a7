"""Bearer-token check for the receivers: constant-time, and the token is never logged."""

from __future__ import annotations

import hmac


class TokenCheck:
    """Accepts ``Authorization: Bearer <token>`` when a token is configured, anything when not."""

    __slots__ = ("_expected",)

    def __init__(self, token: str | None) -> None:
        self._expected = f"Bearer {token}".encode() if token else None

    @property
    def enabled(self) -> bool:
        return self._expected is not None

    def __repr__(self) -> str:  # keep the token out of logs and tracebacks
        return f"TokenCheck(enabled={self.enabled})"

    def allows(self, authorization: str | bytes | None) -> bool:
        if self._expected is None:
            return True
        if authorization is None:
            return False
        given = authorization.encode() if isinstance(authorization, str) else authorization
        return hmac.compare_digest(given, self._expected)
