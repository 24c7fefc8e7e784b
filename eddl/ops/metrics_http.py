"""Serve a Prometheus registry over HTTP (``/metrics``) on ``--metrics-bind HOST:PORT``.

prometheus_client's own WSGI server, in a daemon thread: a scrape never runs on the daemon's
event loop, and the collectors it calls take the locks the daemons' state already has. Port 0
lets the OS pick; :attr:`MetricsServer.address` says which it took.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from prometheus_client.registry import Collector, CollectorRegistry

from eddl.config import ConfigError, check_address

__all__ = ["MetricsServer", "serve_metrics"]


@dataclass
class MetricsServer:
    httpd: WSGIServer
    thread: threading.Thread
    host: str

    @property
    def port(self) -> int:
        return int(self.httpd.server_port)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def serve_metrics(bind: str, *collectors: Collector) -> MetricsServer:
    """Start serving ``collectors`` (in a registry of their own) on ``bind``."""
    try:
        check_address(bind, "metrics_bind")
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    try:
        httpd, thread = start_http_server(int(port), addr=host, registry=registry)
    except OSError as exc:
        raise ValueError(f"cannot serve metrics on {bind}: {exc}") from exc
    return MetricsServer(httpd, thread, host)
