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


# What the walk needs of a field, read once per field descriptor and bounds (descriptor
# properties, ``GetOptions()`` and the string limit's rules are slow next to the checks
# themselves): its kind, whether it is a map or repeated, and a string's limit. Bytes, bools
# and enums are not listed (``_SKIP``): the message size bounds them.
_INT, _FLOAT, _STRING, _MESSAGE, _MAP, _SKIP = range(6)
_Plan = tuple[int, bool, int]  # (kind, repeated, string limit)
_plans: dict[tuple[int, FieldDescriptor], _Plan] = {}
_bounds_seen: dict[int, MessageBounds] = {}  # keeps each bounds (hence its id) alive


def _plan(fd: FieldDescriptor, bounds: MessageBounds) -> _Plan:
    _bounds_seen.setdefault(id(bounds), bounds)
    kind = fd.type
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        category = _MAP
    elif kind in _INTS:
        category = _INT
    elif kind in _FLOATS:
        category = _FLOAT
    elif kind in _STRINGS:
        category = _STRING
    elif kind in _MESSAGES:
        category = _MESSAGE
    else:
        category = _SKIP
    limit = bounds.string_limit(fd) if category == _STRING else 0
    plan = _plans[(id(bounds), fd)] = (category, bool(fd.is_repeated), limit)
    return plan


def _walk(message: Message, bounds: MessageBounds, where: str) -> None:
    key = id(bounds)
    for fd, value in message.ListFields():
        plan = _plans.get((key, fd)) or _plan(fd, bounds)
        category, repeated, limit = plan
        if category == _SKIP:
            continue
        if category == _MAP:
            _check_map(fd, value, bounds, f"{where}.{fd.name}")
            continue
        if not repeated:
            value = (value,)
        elif len(value) > bounds.max_repeated:
            raise BoundsError(
                f"{where}.{fd.name}: {len(value)} entries; at most {bounds.max_repeated}"
            )
        if category == _INT:
            for item in value:
                if item > bounds.max_int:
                    raise BoundsError(f"{where}.{fd.name}: {item} is above {bounds.max_int}")
        elif category == _FLOAT:
            for item in value:
                if not math.isfinite(item):
                    raise BoundsError(f"{where}.{fd.name} must be finite, got {item!r}")
        elif category == _STRING:
            for item in value:
                if len(item) > limit:
                    raise BoundsError(f"{where}.{fd.name}: {len(item)} characters; at most {limit}")
        else:
            for item in value:
                _walk(item, bounds, f"{where}.{fd.name}")


def _check_map(
    fd: FieldDescriptor, value: Mapping[object, object], bounds: MessageBounds, name: str
) -> None:
    if len(value) > bounds.max_repeated:
        raise BoundsError(f"{name}: {len(value)} entries; at most {bounds.max_repeated}")
    entry = fd.message_type
    assert entry is not None
    key_fd, value_fd = entry.fields_by_name["key"], entry.fields_by_name["value"]
    for key, item in value.items():
        _check_one(key_fd, key, bounds, f"{name} key")
        _check_one(value_fd, item, bounds, f"{name}[...]")


def _check_one(fd: FieldDescriptor, item: object, bounds: MessageBounds, name: str) -> None:
    """One key or value of a map; ``name`` is its full path."""
    category, _, limit = _plans.get((id(bounds), fd)) or _plan(fd, bounds)
    if category == _INT:
        assert isinstance(item, int)
        if item > bounds.max_int:
            raise BoundsError(f"{name}: {item} is above {bounds.max_int}")
    elif category == _FLOAT:
        assert isinstance(item, float)
        if not math.isfinite(item):
            raise BoundsError(f"{name} must be finite, got {item!r}")
    elif category == _STRING:
        assert isinstance(item, str)
        if len(item) > limit:
            raise BoundsError(f"{name}: {len(item)} characters; at most {limit}")
    elif category == _MESSAGE:
        assert isinstance(item, Message)
        _walk(item, bounds, name)
