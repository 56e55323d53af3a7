"""The protobuf wire format, just enough to split a message into its fields.

Used only when a request does not parse as a whole: splitting it at the
``ResourceSpans`` / ``ScopeSpans`` / ``Span`` boundaries lets each span be parsed
(and refused) alone. Unknown and repeated fields are kept as raw bytes, so
merging them back into a message gives what a whole parse would have.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

__all__ = ["WireError", "fields"]

_VARINT: Final = 0
_FIXED64: Final = 1
_LENGTH_DELIMITED: Final = 2
_FIXED32: Final = 5


class WireError(ValueError):
    """The bytes are not a sequence of protobuf fields."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise WireError("varint longer than 10 bytes")


def fields(buf: bytes) -> Iterator[tuple[int, int, bytes, bytes]]:
    """``(field number, wire type, the field's bytes with its tag, the payload of a length-delimited field)``.

    The payload is ``b""`` for the other wire types. Groups (wire types 3 and 4,
    unused by OTLP) and truncated fields raise :class:`WireError`.
    """
    pos = 0
    end = len(buf)
    while pos < end:
        start = pos
        key, pos = _varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        payload_start = pos
        if wire_type == _VARINT:
            _, pos = _varint(buf, pos)
        elif wire_type == _FIXED64:
            pos += 8
        elif wire_type == _FIXED32:
            pos += 4
        elif wire_type == _LENGTH_DELIMITED:
            length, payload_start = _varint(buf, pos)
            pos = payload_start + length
        else:
            raise WireError(f"wire type {wire_type} of field {number} is not used by OTLP")
        if number == 0 or pos > end:
            raise WireError(f"field {number} is truncated or invalid")
        yield (
            number,
            wire_type,
            buf[start:pos],
            buf[payload_start:pos] if wire_type == _LENGTH_DELIMITED else b"",
        )
