"""``sshgate keys list|revoke``: the SSH keys bound to people by sign-in (docs/oidc.md).

Bindings live where the gateway keeps them: the binding file in ``data_dir``, or the shared
store with ``state:``. Running gateways notice a revocation within a second, refuse the key's
next login and close its open connections.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sshgate.config import config_path_from_env, load_config
from sshgate.identity import rfc3339
from sshgate.oidc.bindings import KeyBinding
from sshgate.state.base import SharedState, StateUnavailable
from sshgate.state.build import build_state
from sshgate.terminal_text import printable

T = TypeVar("T")


def add_keys_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = subparsers.add_parser("keys", help="SSH keys bound to signed-in people")
    commands = keys.add_subparsers(dest="keys_command", required=True)
    listing = commands.add_parser("list", help="one line per binding: fingerprint, identity, groups, expiry")
    listing.add_argument("--config", help="configuration file (default: $SSHGATE_CONFIG)")
    listing.set_defaults(func=keys_list)
    revoke = commands.add_parser("revoke", help="end bindings and close their connections; exit 1 if none")
    revoke.add_argument("--config", help="configuration file (default: $SSHGATE_CONFIG)")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("fingerprint", nargs="?", help="SHA256:... as ssh-keygen -l prints it")
    which.add_argument("--identity", metavar="EMAIL", help="every key of this person")
    revoke.set_defaults(func=keys_revoke)


def _with_store(args: argparse.Namespace, use: Callable[[SharedState], Awaitable[T]]) -> T:
    async def run() -> T:
        state = build_state(load_config(config_path_from_env(args.config)), lambda _up: None)
        try:
            return await use(state)
        finally:
            await state.aclose()

    return asyncio.run(run())


def _line(binding: KeyBinding) -> str:
    """Tab-separated; the identity and groups come from the identity provider, so each is printable."""
    groups = printable(",".join(binding.groups)) or "-"
    return f"{binding.fingerprint}\t{printable(binding.identity)}\t{groups}\t{rfc3339(binding.expires_at)}"


def keys_list(args: argparse.Namespace) -> int:
    for binding in _with_store(args, lambda state: state.bindings()):
        print(_line(binding))
    return 0


def keys_revoke(args: argparse.Namespace) -> int:
    try:
        gone = _with_store(args, lambda store: store.revoke(args.fingerprint, args.identity))
    except StateUnavailable:
        print("sshgate: the state store is unavailable; nothing was revoked", file=sys.stderr)
        return 1
    if not gone:
        print(f"sshgate: no binding matches {args.fingerprint or args.identity}", file=sys.stderr)
        return 1
    for binding in gone:
        print(f"revoked\t{_line(binding)}")
    return 0
