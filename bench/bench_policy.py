"""Session-decision latency of the embedded engine with the shipped policies (target p99 ≤ 200 µs).

Run: ``.venv/bin/python bench/bench_policy.py [N]``. Each sample is one ``decide_now`` (input
conversion, evaluation and decision mapping), rotating through allowed and blocked sessions.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

from sshgate.config import Policies
from sshgate.policy.embedded import EmbeddedDecisionPoint
from sshgate.policy.loader import build_decision_point

POLICIES = Path(__file__).resolve().parents[1] / "policies"


def _inputs() -> list[dict[str, Any]]:
    base: dict[str, Any] = {
        "stage": "session",
        "user": {"type": "human", "email": "alice@corp.com", "provider": "formal", "login": "alice"},
        "native_user": "ubuntu",
        "native_user_source": "group",
        "resource": {"name": "web-1", "type": "ssh", "hostname": "10.0.0.5", "port": 22, "tags": {}},
        "connection": {
            "client_ip": "203.0.113.7",
            "auth_method": "publickey",
            "request": "shell",
            "pty": True,
        },
        "time": {"unix": 1789552800, "rfc3339": "2026-09-16T10:00:00Z"},
    }
    ec2 = {"instance_id": "i-1", "region": "eu-west-1", "account_id": "1", "state": "running"}
    return [
        {**base, "user": {**base["user"], "groups": ["dev"]}},
        {**base, "user": {**base["user"], "email": "john@corp.com", "groups": []}, "native_user": "devops"},
        {**base, "user": {**base["user"], "groups": ["contractors"]}, "time": {"unix": 1789812000}},
        {**base, "user": {**base["user"], "groups": ["dev"]}, "ec2": {**ec2, "tags": {"env": "prod"}}},
    ]


def main(count: int = 10_000) -> int:
    point = build_decision_point(Policies(paths=[str(POLICIES)]))
    assert isinstance(point, EmbeddedDecisionPoint)
    inputs = _inputs()
    for doc in inputs * 50:  # warm caches
        point.decide_now("session", doc)
    samples = []
    actions = {"allow": 0, "block": 0}
    for i in range(count):
        start = time.perf_counter()
        decision = point.decide_now("session", inputs[i % len(inputs)])
        samples.append(time.perf_counter() - start)
        actions[decision.action] += 1
    samples.sort()
    p50 = samples[len(samples) // 2] * 1e6
    p99 = samples[int(len(samples) * 0.99)] * 1e6
    print(f"session decisions: {count} ({actions['allow']} allow, {actions['block']} block)")
    mean = statistics.fmean(samples) * 1e6
    print(f"p50 {p50:.1f} µs  p99 {p99:.1f} µs  mean {mean:.1f} µs  (target p99 ≤ 200 µs)")
    return 0 if p99 <= 200 else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000))
