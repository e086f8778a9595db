"""The Rego engine seam, and regorus behind it (another real Rego engine can replace it here).

A regorus ``Engine`` is bound to the thread that made it: build, evaluate and drop it on one
thread, with nothing in between ``set_input`` and ``eval_rule``. It also holds the GIL for a whole
evaluation, so the gateway runs it in worker processes (:mod:`sshgate.policy.worker`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import regorus

from sshgate.policy.sources import PolicyLoadError, RegoModule


class RegoError(Exception):
    """An evaluation that failed; the message is for the audit log, never for the client."""


@dataclass(frozen=True, slots=True)
class Rule:
    """A rule as the policy text declares it: ``data.<package>.<name>``."""

    path: str
    file: str
    function: bool


class RegoEngine(Protocol):
    def rules(self) -> Sequence[Rule]: ...

    def has_rule(self, path: str) -> bool: ...

    def eval_rule(self, path: str, input_doc: Mapping[str, Any] | str | None) -> Any:
        """The rule's value, ``None`` when undefined; raises :class:`RegoError`.

        ``input_doc`` may be JSON text, which skips building Python objects only to convert them.
        """
        ...


_LOCATION = re.compile(r"-->\s*(?P<loc>\S+)\s*\n(?:.*\n)*?error:\s*(?P<msg>.*)")
# No asyncio.CancelledError: these calls are synchronous, and the worker process would pay
# tens of milliseconds at every start to import asyncio for it.
_FATAL = (KeyboardInterrupt, SystemExit, GeneratorExit)


def is_test_rule(path: str) -> bool:
    return path.rsplit(".", 1)[-1].startswith("test_")


def describe(exc: BaseException) -> str:
    """regorus messages carry a source excerpt and a Rust backtrace; keep ``file:line:col: error``."""
    text = str(exc).split("Stack backtrace:", 1)[0].strip()
    found = _LOCATION.search(text)
    if found:
        return f"{found['loc']}: {found['msg'].strip()}"
    return text.splitlines()[0] if text else type(exc).__name__


def _reraise_fatal(exc: BaseException) -> None:
    # regorus raises pyo3's PanicException, a BaseException, on misuse: that one is an engine
    # error to fail closed on, but interrupts and exits must keep their meaning.
    if isinstance(exc, _FATAL):
        raise exc


def _ref_names(ref: Mapping[str, Any]) -> list[str]:
    """``a.b["c"]`` in regorus' AST JSON as ``["a", "b", "c"]`` (non-literal parts end it)."""
    kind, node = next(iter(ref.items()))
    if kind == "Var":
        return [str(node["value"])]
    if kind == "RefDot":
        return [*_ref_names(node["refr"]), str(node["field"][1])]
    if kind == "RefBrack":
        return _ref_names(node["refr"])
    return []


def _rules_of(ast: list[dict[str, Any]]) -> list[Rule]:
    rules: dict[str, Rule] = {}
    for module in ast:
        package = ".".join(_ref_names(module["ast"]["package"]["refr"]))
        for rule in module["ast"]["rules"]:
            kind, node = next(iter(rule.items()))
            if kind == "Default":
                head_kind, ref = "Compr", node["refr"]
            else:
                head_kind, head = next(iter(node["head"].items()))
                ref = head["refr"]
            path = f"data.{package}.{_ref_names(ref)[0]}"
            rules.setdefault(path, Rule(path, module["source"]["file"], head_kind == "Func"))
    return list(rules.values())


class RegorusEngine:
    """Compiled policies in one regorus ``Engine``; use only on the thread that compiled them."""

    def __init__(self, engine: Any, rules: Sequence[Rule]) -> None:
        self._engine = engine
        self._rules = tuple(rules)
        self._paths = frozenset(r.path for r in rules if not r.function)

    @classmethod
    def compile(cls, modules: Sequence[RegoModule]) -> RegorusEngine:
        """Parse every module (Rego v1, else legacy v0) and prepare them all, so errors show at load."""
        engine = regorus.Engine()
        rules = _prepare(engine, modules)
        if isinstance(rules, str):
            # Raised with no frame or exception context that still holds the engine: otherwise it
            # lives in a reference cycle and the collector may drop it on another thread, which
            # regorus refuses (RuntimeError "Engine is unsendable").
            del engine
            raise PolicyLoadError(rules)
        return cls(engine, rules)

    def rules(self) -> Sequence[Rule]:
        return self._rules

    def has_rule(self, path: str) -> bool:
        return path in self._paths

    def eval_rule(self, path: str, input_doc: Mapping[str, Any] | str | None) -> Any:
        try:
            if isinstance(input_doc, str):
                self._engine.set_input_json(input_doc)
            elif input_doc is not None:
                self._engine.set_input(input_doc)
            return self._engine.eval_rule(path)
        except BaseException as exc:
            _reraise_fatal(exc)
            raise RegoError(describe(exc)) from None


def _prepare(engine: Any, modules: Sequence[RegoModule]) -> list[Rule] | str:
    """Add and check every module; the rules, or the first error as text."""
    try:
        for module in modules:
            _add_module(engine, module)
        rules = _rules_of(json.loads(engine.get_ast_as_json()))
        # regorus checks a rule when first evaluated: do it now, without input, so errors show
        # at load. Tests are left to the test runner, where their errors are failures.
        for rule in rules:
            if not rule.function and not is_test_rule(rule.path):
                engine.eval_rule(rule.path)
    except PolicyLoadError as exc:
        return str(exc)
    except BaseException as exc:
        _reraise_fatal(exc)
        return describe(exc)
    return rules


def _add_module(engine: Any, module: RegoModule) -> None:
    """Rego v1 first (OPA 1.x's default); a file that only parses as v0 is legacy Formal style."""
    try:
        engine.add_policy(module.path, module.text)
        return
    except BaseException as exc:
        _reraise_fatal(exc)
        v1_error = describe(exc)
    engine.set_rego_v0(True)
    try:
        engine.add_policy(module.path, module.text)
    except BaseException as exc:
        _reraise_fatal(exc)
        raise PolicyLoadError(v1_error) from None
    finally:
        engine.set_rego_v0(False)
