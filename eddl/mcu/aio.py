"""The MCU driver for asyncio code: blocking serial I/O runs in worker threads."""

from __future__ import annotations

import asyncio

from .driver import Device
from .protocol import Hello, SetupSpec, Stats

__all__ = ["AsyncDevice"]


class AsyncDevice:
    """:class:`Device` for asyncio code: each call runs in a worker thread, one at a time."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, url: str, *, reply_timeout: float = 1.0, retries: int = 8) -> AsyncDevice:
        dev = await asyncio.to_thread(Device.open, url, timeout=reply_timeout, retries=retries)
        return cls(dev)

    async def hello(self) -> Hello:
        async with self._lock:
            return await asyncio.to_thread(self.device.hello)

    async def setup(self, spec: SetupSpec) -> tuple[int, int]:
        async with self._lock:
            return await asyncio.to_thread(self.device.setup, spec)

    async def load(self, tensor: int, data: bytes) -> None:
        async with self._lock:
            await asyncio.to_thread(self.device.load, tensor, data)

    async def read(self, tensor: int, nbytes: int) -> bytes:
        async with self._lock:
            return await asyncio.to_thread(self.device.read, tensor, nbytes)

    async def train(
        self,
        n: int,
        *,
        batch: int = 1,
        epochs: int = 1,
        layer: int | None = None,
        lr_inv: int = 0,
        lr: float = 0.0,
        reply_timeout: float | None = None,
    ) -> tuple[int, int]:
        async with self._lock:
            return await asyncio.to_thread(
                self.device.train,
                n,
                batch=batch,
                epochs=epochs,
                layer=layer,
                lr_inv=lr_inv,
                lr=lr,
                timeout=reply_timeout,
            )

    async def stats(self) -> Stats:
        async with self._lock:
            return await asyncio.to_thread(self.device.stats)

    async def close(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self.device.close)
