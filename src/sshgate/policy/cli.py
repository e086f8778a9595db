"""``sshgate policy test`` and ``sshgate policy eval``: check policies before the gateway loads them."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from sshgate.config import ConfigError, Policies, config_path_from_env, load_config
from sshgate.policy.decision import Decision, Stage
from sshgate.policy.sources import PolicyLoadError


def add_policy_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``policy test|eval``; each sets ``func(args) -> exit status``."""
    policy = subparsers.add_parser("policy", help="test and evaluate Rego policies")
    commands = policy.add_subparsers(dest="policy_command", required=True)

    test = commands.add_parser("test", help="run every test_ rule; non-zero exit on any failure")
    test.add_argument("paths", nargs="*", default=["policies"], help="policy files or directories")
    test.add_argument("-v", "--verbose", action="store_true", help="list passing tests too")
    test.set_defaults(func=policy_test)

    evaluate = commands.add_parser("eval", help="print the decision for one input document as JSON")
    evaluate.add_argument("--input", required=True, type=Path, help="JSON input document")
    evaluate.add_argument("--stage", choices=["session", "request"], default="session")
    source = evaluate.add_mutually_exclusive_group()
    source.add_argument("--config", help="gateway config whose policies: section to use")
    source.add_argument("--policies", action="append", metavar="PATH", help="policy file or directory")
    evaluate.set_defaults(func=policy_eval)


def policy_test(args: argparse.Namespace) -> int:
    from sshgate.policy.testing import run_tests  # on use: the engines are most of a start-up

    try:
        results = run_tests(args.paths)
    except PolicyLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for result in results:
        if not result.passed or args.verbose:
            status = "PASS" if result.passed else "FAIL"
            detail = f": {result.detail}" if result.detail else ""
            print(f"{status} {result.name} ({result.file}){detail}")
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    if not results:
        print("error: no test_ rules found", file=sys.stderr)
    return 1 if failed or not results else 0


def policy_eval(args: argparse.Namespace) -> int:
    try:
        input_doc = json.loads(args.input.read_text(encoding="utf-8"))
        if args.policies:
            policies = Policies(paths=args.policies)
        else:
            policies = load_config(config_path_from_env(args.config)).policies
        decision = asyncio.run(_decide(policies, args.stage, input_doc))
    except (OSError, ValueError, ConfigError, PolicyLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(_as_json(decision), indent=2))
    return 0


async def _decide(policies: Policies, stage: Stage, input_doc: dict[str, Any]) -> Decision:
    from sshgate.policy.loader import ReloadableDecisionPoint  # on use, as run_tests

    point = await ReloadableDecisionPoint.open(policies)
    try:
        return await point.decide(stage, input_doc)
    finally:
        await point.aclose()


def _as_json(decision: Decision) -> dict[str, Any]:
    return {
        "stage": decision.stage,
        "action": decision.action,
        "client_text": None if decision.allowed else decision.client_text(),
        "message": decision.message,
        "reason": decision.reason,
        "eval_seconds": decision.eval_seconds,
    }
