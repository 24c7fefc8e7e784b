"""CRC-32 of the serial frames: IEEE 802.3, reflected, as ``zlib.crc32`` and the firmware's
``crc32.c`` (check value ``crc32(b"123456789") == 0xCBF43926``)."""

from __future__ import annotations

import zlib

__all__ = ["CHECK_VALUE", "crc32"]

CHECK_VALUE = 0xCBF43926


def crc32(data: bytes | bytearray | memoryview, start: int = 0) -> int:
    """CRC-32 of ``data``, continuing from ``start`` (the CRC of the bytes before it)."""
    return zlib.crc32(data, start) & 0xFFFFFFFF
