"""``sshgate-aws-emulator [--host 127.0.0.1] [--port N]``: the emulator as a standalone process.

``--boot-delay`` / ``--agent-delay`` set how long a started EC2 instance stays pending and how
long after that its SSM agent comes online (1 s each by default).

Prints ``ready http://HOST:PORT`` on stdout once it listens (docker-compose and outside tools wait
for that line) and stops cleanly on SIGTERM or SIGINT. Flags and output are a stable interface.
Runs on uvloop when it is installed: the data channel is CPU-bound per message. Installed by the
``sshgate-aws-emulator`` distribution (``emulator/`` in the repository), which brings moto; the
gateway's own distribution leaves this package out.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from sshgate.ssm.emulator import DEFAULT_AGENT_VERSION, Emulator


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sshgate-aws-emulator",
        description="Session Manager data-channel and control-plane emulator in front of moto.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free port)")
    parser.add_argument("--region", default="us-east-1", help="region assumed for unsigned requests")
    parser.add_argument("--agent-version", default=DEFAULT_AGENT_VERSION, help="agent version to report")
    parser.add_argument(
        "--boot-delay", type=float, default=1.0, help="seconds a started EC2 instance stays pending"
    )
    parser.add_argument(
        "--agent-delay", type=float, default=1.0, help="seconds after that until its SSM agent is online"
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    emulator = Emulator(
        args.host,
        args.port,
        agent_version=args.agent_version,
        region=args.region,
        boot_delay=args.boot_delay,
        agent_delay=args.agent_delay,
    )
    await emulator.start()
    try:
        print(f"ready {emulator.url}", flush=True)
        await stop.wait()
    finally:
        await emulator.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        try:
            import uvloop
        except ImportError:
            asyncio.run(serve(args))
        else:
            uvloop.run(serve(args))
    except OSError as exc:
        print(f"sshgate-aws-emulator: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
