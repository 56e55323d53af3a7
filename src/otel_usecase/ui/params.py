"""The dashboard's GET parameters: the filters every page has, and each page's own.

The URL is the view: every choice (time range, use case, user, experience, version,
tags, bucket, order, page) is a GET parameter, so a copied link shows the same thing.
A parameter a page does not know, or a value it cannot use, is a 400 naming the
parameter, the value and the rule, never a silently different view.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Final, NamedTuple
from urllib.parse import parse_qsl, urlencode

from ..report.queries import ReportError, parse_since
from ..scope.validation import NAME_RULE, is_name
from ..store import ReportFilter

__all__ = ["FILTER_PARAMS", "BadRequest", "Filters", "Params", "parse_params", "query_string"]

FILTER_PARAMS: Final = ("since", "until", "use_case", "user", "experience", "version", "tag")
"""The filters of every page and API route (``tag`` repeats: ``tag=tenant=acme&tag=team=search``)."""

MAX_VALUE_CHARS: Final = 4096
"""Longest parameter value accepted (an id past this is not one the ledger can hold)."""
MAX_FIELDS: Final = 64


class BadRequest(ValueError):
    """A request the dashboard cannot answer as asked (HTTP 400, the message says why)."""


class Filters(NamedTuple):
    """Which calls a page shows; every field set must match (``user``: the stored user id, as shown)."""

    since: str | None = None
    until: str | None = None
    use_case: str | None = None
    user: str | None = None
    experience: str | None = None
    version: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    use_cases: tuple[str, ...] | None = None
    """What the reader may see (the app sets it from the request's token, never from the URL): None = all."""

    def report_filter(self, now: float | None = None) -> ReportFilter:
        """The store's filter (``since``/``until``: a duration ago, or a date; ``until`` exclusive)."""
        now = time.time() if now is None else now
        return ReportFilter(
            use_case=self.use_case,
            since_ns=_when("since", self.since, now),
            until_ns=_when("until", self.until, now),
            user_id=self.user,
            experience_name=self.experience,
            use_case_version=self.version,
            tags=self.tags,
            use_cases=self.use_cases,
        )

    def pairs(self) -> list[tuple[str, str]]:
        """The filters as GET parameters (unset ones left out), in a fixed order (never ``use_cases``)."""
        values = (self.since, self.until, self.use_case, self.user, self.experience, self.version)
        out = [(name, value) for name, value in zip(FILTER_PARAMS, values) if value is not None]
        out += [("tag", f"{key}={value}") for key, value in self.tags]
        return out

    @property
    def active(self) -> bool:
        return bool(self.pairs())


def _when(name: str, value: str | None, now: float) -> int | None:
    try:
        return parse_since(value, now)
    except ReportError:
        raise BadRequest(
            f"{name}={value!r} is neither a duration ago (24h, 7d, 30m) nor a date (2026-01-01)"
        ) from None


class Params(NamedTuple):
    """A request's parameters: the filters and the page's own (each given once, blank = unset)."""

    filters: Filters
    own: Mapping[str, str]

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.own.get(name, default)

    def choice(self, name: str, choices: Sequence[str], default: str) -> str:
        value = self.own.get(name)
        if value is None:
            return default
        if value not in choices:
            raise BadRequest(f"{name}={value!r} is not one of {', '.join(choices)}")
        return value

    def number(self, name: str, default: int, low: int, high: int) -> int:
        value = self.own.get(name)
        if value is None:
            return default
        if not value.isdigit() or not low <= int(value) <= high:
            raise BadRequest(f"{name}={value!r} is not a whole number from {low} to {high}")
        return int(value)

    def required(self, name: str) -> str:
        value = self.own.get(name)
        if value is None:
            raise BadRequest(f"{name} is missing: this page needs it")
        return value


def parse_params(query: bytes | str, own: Sequence[str]) -> Params:
    """Parse a query string; ``own`` names the page's parameters besides :data:`FILTER_PARAMS`."""
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    try:
        # strict UTF-8 (a value must be text), at most MAX_FIELDS fields (a page has far fewer)
        items = parse_qsl(query, keep_blank_values=True, errors="strict", max_num_fields=MAX_FIELDS)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the query string cannot be read: {exc}") from None
    values: dict[str, str] = {}
    tags: dict[str, str] = {}
    for name, value in items:
        if len(value) > MAX_VALUE_CHARS:
            raise BadRequest(
                f"{name}: a value of {len(value)} characters is over the limit of {MAX_VALUE_CHARS}"
            )
        if name not in FILTER_PARAMS and name not in own:
            known = ", ".join((*FILTER_PARAMS, *own))
            raise BadRequest(f"{name!r} is not a parameter of this page (it takes {known})")
        if value == "":
            continue  # an empty form field: unset
        if name == "tag":
            key, sep, tag_value = value.partition("=")
            if not sep or not key:
                raise BadRequest(f"tag={value!r} is not KEY=VALUE")
            if not is_name(key):
                raise BadRequest(f"tag key {key!r} is not a tag key: {NAME_RULE}")
            if key in tags and tags[key] != tag_value:
                raise BadRequest(f"tag {key!r} is given twice with different values")
            tags[key] = tag_value
            continue
        if name in values and values[name] != value:
            raise BadRequest(f"{name} is given twice ({values[name]!r} and {value!r})")
        values[name] = value
    filters = Filters(
        since=values.pop("since", None),
        until=values.pop("until", None),
        use_case=values.pop("use_case", None),
        user=values.pop("user", None),
        experience=values.pop("experience", None),
        version=values.pop("version", None),
        tags=tuple(sorted(tags.items())),
    )
    return Params(filters, values)


def query_string(filters: Filters, **own: str | int | None) -> str:
    """``?filters&own`` for a link (empty when there is nothing to say)."""
    pairs = filters.pairs() + [(k, str(v)) for k, v in own.items() if v is not None]
    return "?" + urlencode(pairs) if pairs else ""
