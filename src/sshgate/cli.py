"""The ``sshgate`` command line (docs/cli.md)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from sshgate import audit
from sshgate.config import ConfigError, config_path_from_env, load_config
from sshgate.oidc.cli import add_keys_commands
from sshgate.policy.cli import add_policy_commands
from sshgate.recording.cli import add_recording_commands
from sshgate.recording.recorder import RecordingError
from sshgate.revoked_keys import RevokedKeysFile
from sshgate.tokens import new_token

T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a declared dependency on Linux
        return asyncio.run(coro)
    return uvloop.run(coro)


def cmd_serve(args: argparse.Namespace) -> int:
    from sshgate.gateway.server import serve

    audit.configure()
    return _run(serve(config_path_from_env(args.config)))


def cmd_demo(args: argparse.Namespace) -> int:
    from sshgate.demo import run_demo

    audit.configure(stream=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        _run(run_demo(port=args.port, web_port=args.web_port))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    path = config_path_from_env(args.config)
    config = load_config(path)
    RevokedKeysFile(config.identities.revoked_keys)
    print(
        f"{path}: OK ({len(config.resources)} resources, {len(config.identities.users)} users, "
        f"{len(config.identities.machines)} machines)"
    )
    return 0


def cmd_token_new(args: argparse.Namespace) -> int:
    token, hashed = new_token()
    print(f"token: {token}")
    print(f"hash:  {hashed}")
    print(
        "Give the token to its owner (it is their SSH password); put only the hash in the config.",
        file=sys.stderr,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sshgate", description="Identity-aware SSH gateway.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(
        name: str, func: Callable[[argparse.Namespace], int], help_text: str, config: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if config:
            p.add_argument("--config", help="configuration file (default: $SSHGATE_CONFIG)")
        p.set_defaults(func=func)
        return p

    add("serve", cmd_serve, "run the gateway")
    demo = add(
        "demo", cmd_demo, "run the gateway with a demo upstream and a generated configuration", config=False
    )
    demo.add_argument("--port", type=int, default=2222, help="port to listen on (0: any free port)")
    demo.add_argument(
        "--web-port", type=int, default=8080, help="the web app's port on 127.0.0.1 (0: any free port)"
    )
    add("check-config", cmd_check_config, "validate the configuration and exit")
    token = sub.add_parser("token", help="access tokens").add_subparsers(dest="token_command", required=True)
    token.add_parser("new", help="print a fresh token and its hash").set_defaults(func=cmd_token_new)
    add_keys_commands(sub)
    add_policy_commands(sub)
    add_recording_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"sshgate: configuration error:\n{exc}", file=sys.stderr)
        return 2
    except RecordingError as exc:
        print(f"sshgate: recordings cannot be written, so the gateway will not serve: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
