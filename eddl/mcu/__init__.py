"""Microcontroller workers: the serial protocol, the device driver, and device launchers.

* ``crc``       CRC-32 of the frames (as zlib and the firmware).
* ``framing``   COBS byte stuffing, frame encode/decode, a delimiter-cutting reader.
* ``protocol``  message types, error codes, payload layouts (mirrors ``firmware/src/proto.h``).
* ``link``      :class:`Link`: byte I/O on any pyserial URL, frames cut and replies matched; the
  driver's errors.
* ``exchange``  :class:`Exchange`: sequence numbers, HELLO, stop-and-wait and pipelined requests
  with timeouts, bounded retransmission and duplicate-safe retries.
* ``driver``    :class:`Device`: the commands a device answers (SETUP, LOAD, TRAIN, ...).
* ``aio``       :class:`AsyncDevice`: the driver for asyncio code (I/O in worker threads).
* ``session``   :class:`DeviceModel`: typed upload/download of weights, samples, accuracy.
* ``training``  the host loop that trains a dataset on one device (``eddl mcu train``).
* ``build``     firmware builds: the shipped sources, the per-user build cache, the tools needed.
* ``launch``    the host simulator (TCP or pty) and QEMU, built if needed, with bounded lifetimes.
* ``faults``    a fault-injecting TCP proxy for link tests.
"""

from .aio import AsyncDevice
from .driver import Device, DeviceError, LinkError, McuError
from .protocol import Algo, ErrorCode, Hello, MsgType, ProtocolError, SetupSpec, Stats
from .session import DeviceModel, McuInputError

__all__ = [
    "Algo",
    "AsyncDevice",
    "Device",
    "DeviceError",
    "DeviceModel",
    "ErrorCode",
    "Hello",
    "LinkError",
    "McuError",
    "McuInputError",
    "MsgType",
    "ProtocolError",
    "SetupSpec",
    "Stats",
]
