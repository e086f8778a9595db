"""What every deploy artifact is checked against: the repository, its console scripts and the config schema."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from sshgate.config import Config
from sshgate.metrics import parse_listen

REPO = Path(__file__).resolve().parents[2]

# Variables the gateway reads besides its config file: the AWS SDK's own, and the ECS discovery switch.
SDK_ENV = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "ENABLE_ECS_AUTO_DISCOVERY",
}


# The distributions this repository builds, by name: the gateway and the AWS emulator.
PYPROJECTS = {
    "sshgate": REPO / "pyproject.toml",
    "sshgate-aws-emulator": REPO / "emulator" / "pyproject.toml",
}


def project(distribution: str) -> dict[str, Any]:
    with PYPROJECTS[distribution].open("rb") as f:
        return dict(tomllib.load(f)["project"])


def console_scripts(distribution: str = "sshgate") -> set[str]:
    return set(project(distribution).get("scripts", {}))


Step = tuple[str, str]


def dockerfile_steps() -> list[Step]:
    """The Dockerfile's instructions as (OP, argument), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def dockerfile_stages() -> dict[str, list[Step]]:
    """Each named stage's instructions after its own FROM, in file order."""
    stages: dict[str, list[Step]] = {}
    steps: list[Step] = []
    for op, arg in dockerfile_steps():
        if op == "FROM":
            words = arg.split()
            assert len(words) == 3 and words[1].upper() == "AS", f"every stage is named: FROM {arg}"
            steps = stages.setdefault(words[2], [])
        steps.append((op, arg))
    return stages


def stage_steps(name: str) -> list[Step]:
    """What an image built with ``--target name`` runs: its parent stages' instructions, then its own."""
    stages = dockerfile_stages()
    steps = stages[name]
    base = steps[0][1].split()[0]
    return (stage_steps(base) if base in stages else []) + steps


def secret_env_refs(config: Config) -> set[str]:
    """Names the config reads with ``ENV:NAME`` secrets: the deployment must set each one."""
    secrets = [n.secret for r in config.resources for n in r.native_users]
    if config.identities.oidc is not None and config.identities.oidc.client_secret:
        secrets.append(config.identities.oidc.client_secret)
    if config.state is not None:
        secrets += [config.state.url, config.state.hmac_key]
    return {secret.removeprefix("ENV:") for secret in secrets if secret.startswith("ENV:")}


def gateway_env_allowed(config: Config) -> set[str]:
    return {"SSHGATE_CONFIG", *SDK_ENV, *secret_env_refs(config)}


def metrics_port(config: Config) -> int:
    assert config.metrics.listen is not None, "deployments serve probes: metrics.listen must be set"
    return parse_listen(config.metrics.listen)[1]
