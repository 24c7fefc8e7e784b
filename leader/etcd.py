"""``EtcdClient``: an async client of etcd's v3 JSON gateway (``/v3/...`` over HTTP, httpx).

Only what leader election needs: leases (grant, keep-alive, revoke), range, put, delete, a
create-if-absent transaction under a lease, a write guarded by a key's create revision (the
fencing term), and watch as one streaming ``POST /v3/watch``. The gateway speaks protobuf's
JSON mapping: keys and values are base64, 64-bit integers are strings.

Everything is bounded: each request has a timeout, response bodies and watch messages have a
size limit, and every failure surfaces as :class:`EtcdError` (``EtcdUnavailable`` when no
endpoint answered) with the endpoints it tried. Several endpoints may be given (the members
of one cluster); a request goes to the first that answers, and that one is tried first next.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

__all__ = [
    "EtcdClient",
    "EtcdError",
    "EtcdUnavailable",
    "KeyValue",
    "Lease",
    "WatchEvent",
    "parse_coordinator",
    "prefix_end",
]

MAX_BODY = 4 * 1024 * 1024  # etcd refuses requests over 1.5 MiB; replies stay well below this
MAX_WATCH_MESSAGE = 4 * 1024 * 1024


class EtcdError(Exception):
    """etcd answered with an error, or its answer could not be understood."""


class EtcdUnavailable(EtcdError):
    """No etcd endpoint answered."""


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True)
class Lease:
    id: int
    ttl: int


@dataclass(frozen=True)
class WatchEvent:
    kind: Literal["put", "delete"]
    kv: KeyValue


def parse_coordinator(url: str) -> list[str]:
    """``etcd://HOST:PORT[,HOST:PORT...]`` -> the gateway endpoints (``http://HOST:PORT``)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme != "etcd":
        raise ValueError(f"coordinator must be etcd://HOST:PORT[,HOST:PORT...], got {url!r}")
    endpoints = []
    for part in rest.split(","):
        host, colon, port = part.strip().rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"coordinator endpoint must be HOST:PORT, got {part!r} in {url!r}")
        endpoints.append(f"http://{host}:{int(port)}")
    return endpoints


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that selects every key starting with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        return b""
    return base64.b64decode(text)


def _int(value: object) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return 0


def _kv(raw: dict[str, Any]) -> KeyValue:
    return KeyValue(
        key=_unb64(raw.get("key")),
        value=_unb64(raw.get("value")),
        create_revision=_int(raw.get("create_revision")),
        mod_revision=_int(raw.get("mod_revision")),
        version=_int(raw.get("version")),
        lease=_int(raw.get("lease")),
    )


class EtcdClient:
    def __init__(self, endpoints: Sequence[str], *, timeout_s: float = 2.0) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self._endpoints = list(endpoints)
        self._timeout = timeout_s
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s))

    @property
    def endpoints(self) -> list[str]:
        return list(self._endpoints)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- leases ----------------------------------------------------------------------------------
    async def grant(self, ttl_s: int) -> Lease:
        if ttl_s < 1:
            raise ValueError("a lease TTL is at least 1 s")
        reply = await self._post("/v3/lease/grant", {"TTL": ttl_s})
        lease = Lease(_int(reply.get("ID")), _int(reply.get("TTL")))
        if lease.id == 0 or lease.ttl <= 0:
            raise EtcdError(f"etcd granted no lease: {reply.get('error') or reply}")
        return lease

    async def keepalive(self, lease_id: int) -> int:
        """Renew ``lease_id`` once; returns its new TTL (0: the lease has expired)."""
        reply = await self._post("/v3/lease/keepalive", {"ID": str(lease_id)})
        result = reply.get("result")
        if not isinstance(result, dict):
            raise EtcdError(f"etcd keepalive gave no result: {reply}")
        return _int(result.get("TTL"))

    async def revoke(self, lease_id: int) -> None:
        await self._post("/v3/lease/revoke", {"ID": str(lease_id)}, allow_error=True)

    # -- keys ------------------------------------------------------------------------------------
    async def get(self, key: bytes) -> KeyValue | None:
        kvs, _ = await self.range(key)
        return kvs[0] if kvs else None

    async def range(self, key: bytes, range_end: bytes = b"") -> tuple[list[KeyValue], int]:
        """The keys in ``[key, range_end)`` (just ``key`` when no end) and the store revision."""
        body: dict[str, Any] = {"key": _b64(key)}
        if range_end:
            body["range_end"] = _b64(range_end)
        reply = await self._post("/v3/kv/range", body)
        kvs = [_kv(raw) for raw in reply.get("kvs", []) if isinstance(raw, dict)]
        return kvs, _revision(reply)

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        """Write ``key``; returns the revision of the write."""
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        return _revision(await self._post("/v3/kv/put", body))

    async def delete(self, key: bytes) -> int:
        """Delete ``key``; returns how many keys went."""
        reply = await self._post("/v3/kv/deleterange", {"key": _b64(key)})
        return _int(reply.get("deleted"))

    async def create(self, key: bytes, value: bytes, *, lease: int) -> tuple[bool, KeyValue]:
        """Create ``key`` under ``lease`` only if it does not exist (``create_revision == 0``).

        Returns whether this call created it and the key as it now is (the holder's otherwise).
        """
        reply = await self._txn(
            [{"key": _b64(key), "target": "CREATE", "create_revision": "0"}],
            [{"request_put": {"key": _b64(key), "value": _b64(value), "lease": str(lease)}}],
            [{"request_range": {"key": _b64(key)}}],
        )
        succeeded = bool(reply.get("succeeded"))
        current = await self.get(key) if succeeded else _first_range_kv(reply)
        if current is None:  # the holder's lease ran out between the compare and the read
            raise EtcdError(f"key {key!r} vanished during create")
        return succeeded, current

    async def put_guarded(
        self, guard: bytes, create_revision: int, key: bytes, value: bytes
    ) -> bool:
        """Write ``key`` only while ``guard`` still has ``create_revision`` (a fencing term)."""
        reply = await self._txn(
            [{"key": _b64(guard), "target": "CREATE", "create_revision": str(create_revision)}],
            [{"request_put": {"key": _b64(key), "value": _b64(value)}}],
            [],
        )
        return bool(reply.get("succeeded"))

    async def delete_guarded(self, guard: bytes, create_revision: int) -> bool:
        """Delete ``guard`` only if it still has ``create_revision`` (a root resigning)."""
        reply = await self._txn(
            [{"key": _b64(guard), "target": "CREATE", "create_revision": str(create_revision)}],
            [{"request_delete_range": {"key": _b64(guard)}}],
            [],
        )
        return bool(reply.get("succeeded"))

    async def watch(
        self, key: bytes, *, range_end: bytes = b"", start_revision: int = 0
    ) -> AsyncIterator[list[WatchEvent]]:
        """Each batch of changes to ``[key, range_end)`` from ``start_revision`` on, as it happens.

        The stream has no read timeout (a quiet key sends nothing); it ends with
        :class:`EtcdError` when etcd goes away or cancels the watch (compacted revision).
        """
        create: dict[str, Any] = {"key": _b64(key)}
        if range_end:
            create["range_end"] = _b64(range_end)
        if start_revision:
            create["start_revision"] = str(start_revision)
        body = {"create_request": create}
        errors: list[str] = []
        for endpoint in self._ordered():
            connected = False
            try:
                async with self._http.stream(
                    "POST",
                    endpoint + "/v3/watch",
                    json=body,
                    timeout=httpx.Timeout(self._timeout, read=None),
                ) as response:
                    if response.status_code != 200:
                        raise EtcdError(f"etcd watch refused: HTTP {response.status_code}")
                    connected = True
                    self._prefer(endpoint)
                    async for message in _messages(response):
                        events = _watch_events(message)
                        if events:
                            yield events
                raise EtcdUnavailable(f"etcd at {endpoint} closed the watch")
            except httpx.TransportError as exc:
                if connected:  # resuming elsewhere could repeat events: the caller restarts
                    raise EtcdUnavailable(f"etcd at {endpoint} lost the watch: {exc!r}") from exc
                errors.append(f"{endpoint}: {exc!r}")
        raise EtcdUnavailable("etcd unreachable for watch: " + "; ".join(errors))

    # -- transport -------------------------------------------------------------------------------
    async def _txn(
        self, compare: list[dict[str, Any]], success: list[Any], failure: list[Any]
    ) -> dict[str, Any]:
        return await self._post(
            "/v3/kv/txn", {"compare": compare, "success": success, "failure": failure}
        )

    def _ordered(self) -> list[str]:
        return list(self._endpoints)

    def _prefer(self, endpoint: str) -> None:
        if self._endpoints[0] != endpoint:
            self._endpoints.remove(endpoint)
            self._endpoints.insert(0, endpoint)

    async def _post(
        self, path: str, body: dict[str, Any], *, allow_error: bool = False
    ) -> dict[str, Any]:
        errors: list[str] = []
        for endpoint in self._ordered():
            try:
                response = await self._http.post(endpoint + path, json=body)
            except httpx.TransportError as exc:
                errors.append(f"{endpoint}: {exc!r}")
                continue
            self._prefer(endpoint)
            if len(response.content) > MAX_BODY:
                raise EtcdError(f"etcd reply to {path} over {MAX_BODY} bytes")
            try:
                reply = response.json()
            except ValueError as exc:
                raise EtcdError(f"etcd reply to {path} is not JSON: {response.text[:200]}") from exc
            if not isinstance(reply, dict):
                raise EtcdError(f"etcd reply to {path} is not an object")
            if response.status_code != 200 and not allow_error:
                raise EtcdError(f"etcd refused {path}: {reply.get('error') or reply}")
            return reply
        raise EtcdUnavailable(f"etcd unreachable for {path}: " + "; ".join(errors))


def _revision(reply: dict[str, Any]) -> int:
    header = reply.get("header")
    return _int(header.get("revision")) if isinstance(header, dict) else 0


def _watch_events(message: dict[str, Any]) -> list[WatchEvent]:
    result = message.get("result")
    if not isinstance(result, dict):
        raise EtcdError(f"etcd watch error: {message.get('error', message)}")
    if result.get("canceled"):
        raise EtcdError(f"etcd cancelled the watch: {result.get('cancel_reason', result)}")
    return [
        WatchEvent("delete" if raw.get("type") == "DELETE" else "put", _kv(raw.get("kv", {})))
        for raw in result.get("events", [])
        if isinstance(raw, dict)
    ]


def _first_range_kv(reply: dict[str, Any]) -> KeyValue | None:
    for response in reply.get("responses", []):
        kvs = response.get("response_range", {}).get("kvs", [])
        if kvs:
            return _kv(kvs[0])
    return None


async def _messages(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of a gateway stream (one per line), each at most MAX_WATCH_MESSAGE."""
    buffer = b""
    async for piece in response.aiter_bytes():
        buffer += piece
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield _decode(line)
        if len(buffer) > MAX_WATCH_MESSAGE:
            raise EtcdError(f"etcd watch message over {MAX_WATCH_MESSAGE} bytes")
    if buffer.strip():
        yield _decode(buffer)


def _decode(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise EtcdError(f"etcd watch message is not JSON: {line[:200]!r}") from exc
    if not isinstance(message, dict):
        raise EtcdError("etcd watch message is not an object")
    return message
