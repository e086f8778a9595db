"""docker-compose.yml checked statically (no Docker here): paths, ports, env, commands, wiring."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from sshgate.config import Config, SshResource, load_config
from tests.deploy.common import (
    REPO,
    console_scripts,
    dockerfile_stages,
    gateway_env_allowed,
    metrics_port,
    secret_env_refs,
)
from tests.deploy.test_dockerfile import IMAGES

COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
GATEWAY = SERVICES["gateway"]


def bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path → repository path of each ``./source:/target`` volume."""
    mounts = {}
    for volume in service.get("volumes", []):
        if ":" not in volume:
            continue  # an anonymous volume
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = source
    return mounts


def host_path(service: dict[str, Any], container_path: str) -> Path:
    """Where a container path of ``service`` comes from in the repository (longest mount wins)."""
    for target, source in sorted(bind_mounts(service).items(), key=lambda m: -len(m[0])):
        if container_path == target or container_path.startswith(target + "/"):
            return REPO / source / Path(container_path).relative_to(target)
    raise AssertionError(f"{container_path} is not mounted from the repository")


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(host_path(GATEWAY, GATEWAY["environment"]["SSHGATE_CONFIG"]))


def published(service: dict[str, Any]) -> set[int]:
    return {int(str(p).rsplit(":", 1)[1]) for p in service.get("ports", [])}


def test_every_repository_path_exists() -> None:
    for name, service in SERVICES.items():
        for source in bind_mounts(service).values():
            assert (REPO / source).exists(), f"{name} mounts missing {source}"
        if "build" in service:
            assert (REPO / service["build"]["context"] / "Dockerfile").is_file(), name


def test_services_are_the_playground() -> None:
    assert set(SERVICES) == {"gateway", "gateway-2", "opa", "upstream", "aws", "oidc", "valkey"}
    assert SERVICES["opa"]["image"].startswith("openpolicyagent/opa:")
    assert SERVICES["opa"]["command"][:2] == ["run", "--server"]


def test_each_built_service_runs_a_command_its_image_installs() -> None:
    """The image a service builds (its Dockerfile target) installs the distribution whose command it runs."""
    targets = {name: s["build"]["target"] for name, s in SERVICES.items() if "build" in s}
    assert targets == {"gateway": "gateway", "aws": "emulator"}
    for name, target in targets.items():
        assert target in dockerfile_stages()
        assert SERVICES[name]["command"][0] in console_scripts(IMAGES[target]), name
    # Two images, two tags: the emulator's must not overwrite the gateway's.
    assert SERVICES["gateway"]["image"] != SERVICES["aws"]["image"]


def test_gateway_config_is_valid_and_matches_ports(config: Config) -> None:
    assert config.identities.oidc is not None
    provider_port = urlsplit(config.identities.oidc.issuer).port
    assert published(GATEWAY) == {config.listen.port, metrics_port(config), provider_port}
    assert config.listen.host == "0.0.0.0"
    assert config.metrics.listen is not None and config.metrics.listen.startswith("0.0.0.0:")


def test_gateway_env_is_what_the_gateway_reads(config: Config) -> None:
    env = set(GATEWAY["environment"])
    assert env <= gateway_env_allowed(config), env - gateway_env_allowed(config)
    assert secret_env_refs(config) <= env


def test_policies_reach_the_gateway_and_opa(config: Config) -> None:
    assert config.policies.engine == "opa"
    for path in config.policies.paths:
        assert any(host_path(GATEWAY, path).glob("*.rego"))
    opa = SERVICES["opa"]
    policy_dir = opa["command"][-1]
    assert any(host_path(opa, policy_dir).glob("*.rego"))
    url = urlsplit(config.policies.opa_url)
    assert url.hostname == "opa"
    assert f"0.0.0.0:{url.port}" in opa["command"]


def test_aws_endpoints_are_the_emulator(config: Config) -> None:
    command = SERVICES["aws"]["command"]
    port = int(command[command.index("--port") + 1])
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert set(config.aws.endpoints) == {"ec2", "ecs", "ssm", "sts", "s3", "ec2-instance-connect"}
    for endpoint in config.aws.endpoints.values():
        assert (urlsplit(endpoint).hostname, urlsplit(endpoint).port) == ("aws", port)


def test_demo_upstream_is_a_service(config: Config) -> None:
    ssh = [r for r in config.resources if isinstance(r, SshResource)]
    assert ssh
    for resource in ssh:
        assert resource.hostname in SERVICES
    password = SERVICES["upstream"]["environment"]["USER_PASSWORD"]
    assert GATEWAY["environment"]["DEMO_UPSTREAM_PASSWORD"] == password


def test_state_and_grace(config: Config) -> None:
    data = [v for v in GATEWAY["volumes"] if v.endswith(":" + config.data_dir)]
    assert data and data[0].split(":")[0] in COMPOSE["volumes"]
    assert config.recording_dir.is_relative_to(config.data_dir)
    grace = GATEWAY["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) > config.shutdown_grace_s


def test_dependencies_exist() -> None:
    for name, service in SERVICES.items():
        assert set(service.get("depends_on", {})) <= set(SERVICES) - {name}


def test_the_optional_provider_is_the_tests_and_the_issuer(config: Config) -> None:
    oidc = SERVICES["oidc"]
    assert oidc["profiles"] == ["sso"] and oidc["network_mode"] == "service:gateway"
    assert config.identities.oidc is not None
    issuer = config.identities.oidc.issuer
    command = oidc["command"][-1]
    assert f"--issuer {issuer}" in command and f"--port {urlsplit(issuer).port}" in command
    assert "--host 0.0.0.0" in command
    assert (host_path(oidc, oidc["working_dir"]) / "server.mjs").is_file()
    assert (host_path(oidc, oidc["working_dir"]) / "package-lock.json").is_file()


def test_replicas_share_state_in_the_valkey_service(config: Config) -> None:
    assert config.state is not None
    url = urlsplit(config.state.url)
    assert (url.scheme, url.hostname) == ("redis", "valkey")
    assert SERVICES["valkey"]["image"].startswith("valkey/valkey:")
    assert "--appendonly" in SERVICES["valkey"]["command"]
    assert "valkey" in GATEWAY["depends_on"]
    second = SERVICES["gateway-2"]
    assert second["profiles"] == ["replicas"] and second["image"] == GATEWAY["image"]
    assert second["environment"] == GATEWAY["environment"] and second["volumes"] == GATEWAY["volumes"]
    assert published(second) == {config.listen.port}
    key = GATEWAY["environment"][config.state.hmac_key.removeprefix("ENV:")]
    assert len(key) >= 32
