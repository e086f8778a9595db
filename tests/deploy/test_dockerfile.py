"""The Dockerfile checked statically (no Docker here): base, user, PID 1, ports, probe, command, context."""

from __future__ import annotations

import json
import re
import shlex

from sshgate.config import Config
from tests.deploy.common import REPO, console_scripts, metrics_port


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def args(op: str) -> list[str]:
    return [a for o, a in final_stage() if o == op]


def test_slim_python_311_base() -> None:
    for op, arg in instructions():
        if op == "FROM":
            assert arg.split()[0] == "python:3.11-slim"


def test_tini_is_pid_1_and_runs_sshgate_serve() -> None:
    assert any("apt-get install" in a and " tini" in a for a in args("RUN"))
    assert json.loads(args("ENTRYPOINT")[-1]) == ["/usr/bin/tini", "--"]
    command = json.loads(args("CMD")[-1])
    assert command == ["sshgate", "serve"]
    assert command[0] in console_scripts()


def test_runs_as_the_created_non_root_user() -> None:
    user = args("USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    useradd = next(a for a in args("RUN") if "useradd" in a)
    assert f"--uid {uid}" in useradd


def test_ports_and_healthcheck_match_the_config_defaults() -> None:
    defaults = Config()
    ports = {int(p) for a in args("EXPOSE") for p in a.split()}
    assert ports == {defaults.listen.port, metrics_port(defaults)}
    probe = args("HEALTHCHECK")[-1]
    assert f"http://127.0.0.1:{metrics_port(defaults)}/healthz" in probe


def test_config_from_env_and_package_installed() -> None:
    env = " ".join(args("ENV"))
    assert "SSHGATE_CONFIG=/etc/sshgate/config.yaml" in env
    build = " ".join(a for o, a in instructions() if o == "RUN")
    assert "pip wheel --no-cache-dir --wheel-dir /wheels ." in build
    assert any("pip install" in a and "/wheels/" in a for a in args("RUN"))


def test_copied_sources_exist_and_are_not_ignored() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for op, arg in instructions():
        if op == "COPY" and not arg.startswith("--from"):
            for source in shlex.split(arg)[:-1]:
                assert (REPO / source).exists(), source
                assert source not in ignored, source
    assert {"src", "pyproject.toml", "README.md"}.isdisjoint(ignored)
    assert {".git", ".venv", "tests"} <= ignored
