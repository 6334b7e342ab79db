"""``signaling subscribers add|remove|list``: manage subscribers from the command line.

The password is read from the terminal (asked twice) or, when stdin is not a terminal, from its
first line; it is hashed at once and never echoed, logged or passed as an argument (arguments
are visible to every user in ``ps``).  A running server with the file store sees the change
within a second (``signaling reload`` restarts the workers of a multi-process server, which then
read it at start).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

from signaling.auth.subscribers import (
    Subscriber,
    SubscriberError,
    SubscriberStore,
    make_store,
    split_identity,
)

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("subscribers", help="add, remove or list subscribers",
                       description="Subscribers are kept as digest HA1 hashes only.")
    p.add_argument("--config", help="TOML configuration file (for its 'subscribers' option)")
    p.add_argument("--subscribers", help="subscriber file or postgresql:// DSN "
                                         "(default: the server's 'subscribers' option)")
    actions = p.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add a subscriber or change its password")
    add.add_argument("identity", help="USER@DOMAIN (the domain is the digest realm)")
    rm = actions.add_parser("remove", help="remove a subscriber")
    rm.add_argument("identity", help="USER@DOMAIN")
    actions.add_parser("list", help="list subscribers (identities only)")


def _password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Again: "):
        raise SubscriberError("the passwords differ")
    return first


async def _run(store: SubscriberStore, ns: argparse.Namespace) -> int:
    await store.start()
    try:
        if ns.action == "list":
            offset = 0
            while page := await store.list(offset, 1000):
                for s in page:
                    print(f"{s.identity}\t{','.join(sorted(s.ha1))}")
                offset += len(page)
            return 0
        user, realm = split_identity(ns.identity)
        if ns.action == "add":
            created = await store.put(Subscriber.create(user, realm, _password()))
            print(f"{'added' if created else 'updated'} {user}@{realm}")
            return 0
        if not await store.remove(user, realm):
            print(f"signaling: no subscriber {user}@{realm}", file=sys.stderr)
            return 1
        print(f"removed {user}@{realm}")
        return 0
    finally:
        await store.close()


def run(ns: argparse.Namespace, spec: str) -> int:
    try:
        return asyncio.run(_run(make_store(spec), ns))
    except SubscriberError as exc:
        print(f"signaling: {exc}", file=sys.stderr)
        return 2
