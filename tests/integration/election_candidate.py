"""One election candidate as its own process (``python -m tests.integration.election_candidate``):
prints each election event as a JSON line, so a test can kill it with SIGKILL mid-term."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from eddl.leader.election import ElectionConfig, ElectionEvent, EtcdLeadership
from eddl.leader.etcd import EtcdClient


async def _main(args: argparse.Namespace) -> None:
    async with EtcdClient([args.endpoint]) as client:
        config = ElectionConfig(args.id, args.address, ttl_s=args.ttl, margin_s=args.margin)
        leadership = EtcdLeadership(client, config, score=args.score, version=args.version)

        def show(event: ElectionEvent) -> None:
            line = {"kind": event.kind.value, "term": event.term, "at": time.time()}
            print(json.dumps(line), flush=True)

        leadership.on_election(show)
        await leadership.run()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--id", required=True)
    p.add_argument("--address", required=True)
    p.add_argument("--score", type=float, default=0.0)
    p.add_argument("--version", type=int, default=0)
    p.add_argument("--ttl", type=int, default=2)
    p.add_argument("--margin", type=float, default=0.5)
    p.add_argument("--prefix", default="/eddl")
    args = p.parse_args()
    asyncio.run(_main(args))
    sys.exit(0)


if __name__ == "__main__":
    main()
