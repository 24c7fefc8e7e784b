"""The ``eddl`` command's credentials: an admin certificate under the user's config dir.

``eddl enrol`` stores it in ``$EDDL_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/eddl``, else
``~/.config/eddl``; every command that calls a leader then uses mutual TLS with it. Without
one, commands speak plaintext (to a leader started with ``--insecure``).
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc

from eddl.net.channel import open_channel
from eddl.security.tls import Identity, channel_credentials, leader_channel

__all__ = ["CONFIG_DIR_ENV", "admin_channel", "admin_identity", "config_dir"]

CONFIG_DIR_ENV = "EDDL_CONFIG_DIR"


def config_dir() -> Path:
    explicit = os.environ.get(CONFIG_DIR_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "eddl"


def admin_identity() -> Identity | None:
    directory = config_dir()
    return Identity.load(directory) if Identity.exists(directory) else None


def admin_channel(
    address: str, identity: Identity | None = None, *, leader: bool = True
) -> grpc.aio.Channel:
    """A channel to a leader with ``identity``, else the stored admin certificate, if any.

    ``leader=False`` dials any node of the cluster (a health check of a worker's endpoint):
    its certificate must chain to the cluster CA and name the host dialled, whatever its role."""
    identity = identity or admin_identity()
    if identity is None:
        return open_channel(address)
    if not leader:
        return open_channel(address, credentials=channel_credentials(identity))
    return leader_channel(address, identity)
