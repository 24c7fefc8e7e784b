"""Bounds on every field of every request message, checked before a servicer sees it.

A protobuf message can carry integers up to 2^64 - 1, strings and repeated fields as long as
the message limit allows. Nothing behind the servicers has to handle that: :func:`check_message`
walks a decoded request once (depth-first, its depth fixed by the schema) and refuses

* an integer above ``2^63 - 1`` (the largest SQLite stores; ``uint64`` fields reach 2^64 - 1),
* a string longer than its field's limit (``*_id`` 128 characters, ``*token*`` 512, the job's
  JSON 64 KiB, a worker's failure text or leave reason 4 KiB, any other string 1 KiB),
* a repeated field with more entries than :attr:`MessageBounds.max_repeated` (sample indexes,
  shapes, link lists),
* a float that is NaN or infinite where the field is a count, a time or a rate (every
  ``double``/``float`` field of a request: none of them has a use for a non-finite value).

:class:`MessageBounds` holds the limits; :class:`BoundsError` is a ``ValueError``, so it maps to
``INVALID_ARGUMENT`` (``eddl.net.status``). The walk costs one pass over what already arrived.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

__all__ = ["DEFAULT_BOUNDS", "MAX_SQL_INT", "BoundsError", "MessageBounds", "check_message"]

# SQLite's INTEGER is a signed 64-bit number.
MAX_SQL_INT = 2**63 - 1

_INTS = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_SFIXED32,
    }
)
_FLOATS = frozenset({FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT})
_STRINGS = frozenset({FieldDescriptor.TYPE_STRING})
_MESSAGES = frozenset({FieldDescriptor.TYPE_MESSAGE})


class BoundsError(ValueError):
    """A request field is out of range; the text names the field and the bound."""


@dataclass(frozen=True, slots=True)
class MessageBounds:
    """The limits :func:`check_message` applies."""

    max_int: int = MAX_SQL_INT
    max_id_chars: int = 128
    max_token_chars: int = 512
    max_string_chars: int = 1024
    max_repeated: int = 65536
    # Fields allowed longer strings than ``max_string_chars``, by their full name.
    long_strings: Mapping[str, int] = field(
        default_factory=lambda: {
            "eddl.v1.SubmitJobRequest.spec_json": 64 * 1024,
            "eddl.v1.UpdateHeader.failure": 4096,
            "eddl.v1.LeaveRequest.reason": 4096,
        }
    )

    def string_limit(self, fd: FieldDescriptor) -> int:
        named = self.long_strings.get(fd.full_name)
        if named is not None:
            return named
        if fd.name.endswith("_id"):
            return self.max_id_chars
        if "token" in fd.name:
            return self.max_token_chars
        return self.max_string_chars


DEFAULT_BOUNDS = MessageBounds()


def check_message(message: Message, bounds: MessageBounds = DEFAULT_BOUNDS) -> None:
    """Raise :class:`BoundsError` for the first field of ``message`` out of ``bounds``."""
    _walk(message, bounds, message.DESCRIPTOR.name)


def _walk(message: Message, bounds: MessageBounds, where: str) -> None:
    for fd, value in message.ListFields():
        name = f"{where}.{fd.name}"
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            _check_map(fd, value, bounds, name)
            continue
        repeated = bool(fd.is_repeated)
        values = value if repeated else (value,)
        if repeated and len(values) > bounds.max_repeated:
            raise BoundsError(f"{name}: {len(values)} entries; at most {bounds.max_repeated}")
        for item in values:
            _check_value(fd, item, bounds, name)


def _check_map(
    fd: FieldDescriptor, value: Mapping[object, object], bounds: MessageBounds, name: str
) -> None:
    if len(value) > bounds.max_repeated:
        raise BoundsError(f"{name}: {len(value)} entries; at most {bounds.max_repeated}")
    entry = fd.message_type
    assert entry is not None
    key_fd, value_fd = entry.fields_by_name["key"], entry.fields_by_name["value"]
    for key, item in value.items():
        _check_value(key_fd, key, bounds, f"{name} key")
        _check_value(value_fd, item, bounds, f"{name}[...]")


def _check_value(fd: FieldDescriptor, item: object, bounds: MessageBounds, name: str) -> None:
    kind = fd.type
    if kind in _INTS:
        assert isinstance(item, int)
        if item > bounds.max_int:
            raise BoundsError(f"{name}: {item} is above {bounds.max_int}")
    elif kind in _FLOATS:
        assert isinstance(item, float)
        if not math.isfinite(item):
            raise BoundsError(f"{name} must be finite, got {item!r}")
    elif kind in _STRINGS:
        assert isinstance(item, str)
        limit = bounds.string_limit(fd)
        if len(item) > limit:
            raise BoundsError(f"{name}: {len(item)} characters; at most {limit}")
    elif kind in _MESSAGES:
        assert isinstance(item, Message)
        _walk(item, bounds, name)
