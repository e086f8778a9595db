"""What every deploy artifact is checked against: the repository, its console scripts and the config schema."""

from __future__ import annotations

import tomllib
from pathlib import Path

from sshgate.config import Config
from sshgate.metrics import parse_listen

REPO = Path(__file__).resolve().parents[2]

# Variables the gateway reads besides its config file: the AWS SDK's own, and DESIGN §3's switch.
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


def console_scripts() -> set[str]:
    with (REPO / "pyproject.toml").open("rb") as f:
        return set(tomllib.load(f)["project"]["scripts"])


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
