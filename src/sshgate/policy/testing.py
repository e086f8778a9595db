"""A Rego unit-test runner (``opa test`` is not available here): every ``test_*`` rule must be true."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sshgate.policy.rego import RegoError, RegorusEngine, is_test_rule
from sshgate.policy.sources import load_modules


@dataclass(frozen=True, slots=True)
class TestResult:
    __test__ = False  # not a pytest class

    name: str
    file: str
    passed: bool
    detail: str = ""


def run_tests(paths: Iterable[str]) -> list[TestResult]:
    """Load policies with their ``*_test.rego`` files; PolicyLoadError if they do not compile."""
    engine = RegorusEngine.compile(load_modules(paths, include_tests=True))
    results = []
    for rule in engine.rules():
        if rule.function or not is_test_rule(rule.path):
            continue
        try:
            value = engine.eval_rule(rule.path, None)
        except RegoError as exc:
            results.append(TestResult(rule.path, rule.file, False, f"error: {exc}"))
            continue
        detail = "" if value is True else ("undefined" if value is None else f"value {value!r}")
        results.append(TestResult(rule.path, rule.file, value is True, detail))
    return results
