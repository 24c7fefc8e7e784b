"""``eddl token create``, ``eddl node revoke`` and ``eddl enrol``.

``token create`` and ``node revoke`` run on the leader's host and change its state directory
(``--state-dir``) under the same locks the leader takes; ``enrol`` turns an admin token into
the certificate every other ``eddl`` command then uses.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import socket
import sys
from pathlib import Path
from typing import Any

from eddl.security.admin import config_dir
from eddl.security.authority import Authority
from eddl.security.enrol import EnrolmentError, enrol
from eddl.security.node import bootstrap_address
from eddl.security.pki import PkiError
from eddl.security.tokens import ROLES_BY_TOKEN, TokenError

__all__ = ["register"]

DEFAULT_STATE_DIR = "eddl-state"


def _authority(state_dir: str) -> Authority:
    return Authority(Path(state_dir) / "pki")


def _cmd_token_create(args: argparse.Namespace) -> int:
    try:
        token = _authority(args.state_dir).new_token(args.role, args.ttl, args.uses)
    except (TokenError, ValueError, OSError) as exc:
        print(f"eddl token create: {exc}", file=sys.stderr)
        return 1
    print(token)
    return 0


def _cmd_node_revoke(args: argparse.Namespace) -> int:
    try:
        serials = _authority(args.state_dir).revoke_node(args.node_id)
    except (ValueError, OSError) as exc:
        print(f"eddl node revoke: {exc}", file=sys.stderr)
        return 1
    if not serials:
        print(f"eddl node revoke: no live certificate of node {args.node_id!r}", file=sys.stderr)
        return 1
    print(f"revoked {len(serials)} certificate(s) of {args.node_id}")
    return 0


def _cmd_enrol(args: argparse.Namespace) -> int:
    directory = Path(args.dir) if args.dir else config_dir()
    bootstrap = args.bootstrap or bootstrap_address(args.leader)
    try:
        identity = asyncio.run(enrol(bootstrap, args.token, args.node_id))
        identity.save(directory)
    except (EnrolmentError, TokenError, PkiError, OSError) as exc:
        print(f"eddl enrol: {exc}", file=sys.stderr)
        return 1
    info = identity.info
    print(f"enrolled {info.node_id} as {info.role}; certificate in {directory}")
    return 0


def register(subparsers: Any) -> None:
    token = subparsers.add_parser("token", help="join tokens (on the leader's host)")
    token_sub = token.add_subparsers(
        dest="token_command", metavar="ACTION", help="what to do with tokens"
    )
    token_sub.required = True
    create = token_sub.add_parser(
        "create",
        help="print a new single-use join token",
        description="Print EDDL1.<CA hash>.<id>.<secret>: one node enrols with it, once, "
        "before its TTL. The leader keeps only a hash of the secret.",
    )
    create.add_argument("--ttl", type=float, default=24 * 3600.0, help="seconds (default: 1 day)")
    create.add_argument(
        "--role", choices=ROLES_BY_TOKEN, default="worker", help="(default: worker)"
    )
    create.add_argument(
        "--uses",
        type=int,
        default=1,
        help="how many nodes it admits (default: 1; more only for unattended fleets)",
    )
    create.add_argument(
        "--state-dir",
        default=DEFAULT_STATE_DIR,
        help=f"the leader's (default: {DEFAULT_STATE_DIR})",
    )
    create.set_defaults(func=_cmd_token_create)

    node = subparsers.add_parser("node", help="cluster nodes' certificates (on the leader's host)")
    node_sub = node.add_subparsers(
        dest="node_command", metavar="ACTION", help="what to do with a node"
    )
    node_sub.required = True
    revoke = node_sub.add_parser(
        "revoke", help="revoke every certificate of a node: its calls are refused from now on"
    )
    revoke.add_argument("node_id", metavar="ID", help="the node id (its certificate's name)")
    revoke.add_argument(
        "--state-dir",
        default=DEFAULT_STATE_DIR,
        help=f"the leader's (default: {DEFAULT_STATE_DIR})",
    )
    revoke.set_defaults(func=_cmd_node_revoke)

    en = subparsers.add_parser(
        "enrol",
        help="get an admin certificate for the eddl command with an admin token",
        description="Enrol with a token from `eddl token create --role admin`; the key and "
        "certificate go to the config dir, and every eddl command uses them.",
    )
    en.add_argument("token", help="EDDL1.… join token")
    en.add_argument("--leader", default="127.0.0.1:50051", help="leader HOST:PORT")
    en.add_argument("--bootstrap", help="bootstrap HOST:PORT (default: the leader's port + 1)")
    en.add_argument(
        "--node-id",
        default=f"{getpass.getuser()}-{socket.gethostname()}",
        help="the name in the certificate (default: user-host)",
    )
    en.add_argument("--dir", help="where to store it (default: the eddl config dir)")
    en.set_defaults(func=_cmd_enrol)
