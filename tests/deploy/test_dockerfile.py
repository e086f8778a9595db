"""The Dockerfile checked statically (no Docker here): stages, base, user, PID 1, ports, probe, command,
what each image installs, and the build context."""

from __future__ import annotations

import json
import shlex

import pytest

from sshgate.config import Config
from tests.deploy.common import (
    PYPROJECTS,
    REPO,
    console_scripts,
    dockerfile_stages,
    dockerfile_steps,
    metrics_port,
    stage_steps,
)

# Each image target and the one distribution it installs.
IMAGES = {"gateway": "sshgate", "emulator": "sshgate-aws-emulator"}


def args(op: str, target: str = "gateway") -> list[str]:
    return [a for o, a in stage_steps(target) if o == op]


def installed(target: str) -> list[str]:
    """The requirements the target's own ``pip install`` lines name (flags and paths left out)."""
    names = []
    for _, run in (s for s in dockerfile_stages()[target] if s[0] == "RUN"):
        words = shlex.split(run.split("pip install", 1)[1]) if "pip install" in run else []
        names += [w for w in words if not w.startswith("-") and not w.startswith("/")]
    return names


def test_stages_and_default_target() -> None:
    stages = dockerfile_stages()
    assert list(stages) == ["build", "runtime", "emulator", "gateway"]
    # `docker build .` builds the last stage: the gateway stays the default image.
    assert list(stages)[-1] == "gateway"


def test_slim_python_311_base() -> None:
    stages = dockerfile_stages()
    for op, arg in dockerfile_steps():
        if op == "FROM" and arg.split()[0] not in stages:
            assert arg.split()[0] == "python:3.11-slim"


def test_build_stage_builds_both_distributions_from_their_projects() -> None:
    run = " ".join(a for o, a in dockerfile_stages()["build"] if o == "RUN")
    assert "pip wheel --no-cache-dir --wheel-dir /wheels . ./emulator" in run
    assert {p.parent.relative_to(REPO).as_posix() for p in PYPROJECTS.values()} == {".", "emulator"}


@pytest.mark.parametrize("target", IMAGES)
def test_each_image_installs_only_its_distribution_offline(target: str) -> None:
    assert installed(target) == [IMAGES[target]]
    run = next(a for o, a in dockerfile_stages()[target] if o == "RUN" and "pip install" in a)
    # From the build stage's wheels only, mounted for the one step: no index, no wheels left behind.
    assert "--mount=type=bind,from=build,source=/wheels,target=/wheels" in run
    assert "--no-index --find-links /wheels" in run


@pytest.mark.parametrize("target", IMAGES)
def test_tini_is_pid_1_and_the_command_is_the_distributions(target: str) -> None:
    assert any("apt-get install" in a and " tini" in a for a in args("RUN", target))
    assert json.loads(args("ENTRYPOINT", target)[-1]) == ["/usr/bin/tini", "--"]
    command = json.loads(args("CMD", target)[-1])
    assert command[0] in console_scripts(IMAGES[target])


def test_gateway_runs_sshgate_serve_and_emulator_listens_where_it_exposes() -> None:
    assert json.loads(args("CMD")[-1]) == ["sshgate", "serve"]
    command = json.loads(args("CMD", "emulator")[-1])
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert args("EXPOSE", "emulator") == [command[command.index("--port") + 1]]


@pytest.mark.parametrize("target", IMAGES)
def test_runs_as_the_created_non_root_user(target: str) -> None:
    user = args("USER", target)[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    useradd = next(a for a in args("RUN", target) if "useradd" in a)
    assert f"--uid {uid}" in useradd


def test_ports_and_healthcheck_match_the_config_defaults() -> None:
    defaults = Config()
    ports = {int(p) for a in args("EXPOSE") for p in a.split()}
    assert ports == {defaults.listen.port, metrics_port(defaults)}
    probe = args("HEALTHCHECK")[-1]
    assert f"http://127.0.0.1:{metrics_port(defaults)}/healthz" in probe


def test_config_from_env() -> None:
    env = " ".join(args("ENV"))
    assert "SSHGATE_CONFIG=/etc/sshgate/config.yaml" in env


def test_copied_sources_exist_and_are_not_ignored() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    copied = set()
    for op, arg in dockerfile_steps():
        if op == "COPY" and not arg.startswith("--from"):
            for source in shlex.split(arg)[:-1]:
                assert (REPO / source).exists(), source
                assert source not in ignored, source
                copied.add(source)
    assert {"src", "emulator", "pyproject.toml", "README.md"} <= copied
    assert {".git", ".venv", "tests"} <= ignored
