"""The Helm chart, without a helm binary: linted and rendered by the Helm SDK (helm-python-sdk),
every rendered document validated against the Kubernetes 1.30 schemas in strict mode
(kubernetes-validate), then the fields the gateway depends on checked against its own config."""

from __future__ import annotations

import base64
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncssh
import helm_python
import kubernetes_validate
import pytest
import yaml

from sshgate.config import Config, parse_config
from tests.deploy.common import REPO, console_scripts, gateway_env_allowed, metrics_port

CHART = REPO / "helm" / "sshgate"
KUBE = "1.30.0"
VALUES_FILES = ["defaults", "nlb-local-hpa", "existing-secret", "replicas"]

helm_python.disable_logging()


def values_of(name: str) -> dict[str, Any]:
    if name == "defaults":
        return {}
    loaded: dict[str, Any] = yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text())
    return loaded


@dataclass
class Release:
    values: dict[str, Any]
    docs: list[dict[str, Any]]

    def one(self, kind: str, suffix: str = "") -> dict[str, Any]:
        found = [d for d in self.docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
        assert len(found) == 1, (kind, suffix, [d["metadata"]["name"] for d in found])
        return found[0]

    def kinds(self) -> set[str]:
        return {d["kind"] for d in self.docs}

    @property
    def config(self) -> Config:
        return parse_config(self.one("ConfigMap", "-config")["data"]["config.yaml"], "rendered config.yaml")

    @property
    def pod(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.one("Deployment")["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.pod["containers"]
        return container

    def mount_of(self, volume: str) -> str:
        (path,) = [m["mountPath"] for m in self.container["volumeMounts"] if m["name"] == volume]
        return path

    def volume(self, name: str) -> dict[str, Any]:
        (found,) = [v for v in self.pod["volumes"] if v["name"] == name]
        return found

    def container_port(self, name: str) -> int:
        (port,) = [p["containerPort"] for p in self.container["ports"] if p["name"] == name]
        return int(port)


def render(values: dict[str, Any]) -> Release:
    with helm_python.Chart.load(CHART) as chart:
        out = chart.render(values, name="gw", namespace="ops")
    docs = [
        doc for path, text in out.items() if path.endswith(".yaml") for doc in yaml.safe_load_all(text) if doc
    ]
    return Release(values, docs)


@pytest.fixture(scope="module", params=VALUES_FILES)
def release(request: pytest.FixtureRequest) -> Release:
    return render(values_of(request.param))


@pytest.mark.parametrize("name", VALUES_FILES)
def test_lint_strict(name: str) -> None:
    report = helm_python.lint(CHART, values_of(name), strict=True, kube_version=f"v{KUBE}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def check_service_monitor(doc: dict[str, Any], release: Release) -> None:
    """No built-in schema for this CRD: check the fields prometheus-operator reads, and only those."""
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(doc["spec"]) == {"selector", "namespaceSelector", "endpoints"}
    assert doc["spec"]["namespaceSelector"] == {"matchNames": ["ops"]}
    metrics_service = release.one("Service", "-metrics")
    selector = doc["spec"]["selector"]["matchLabels"]
    assert selector.items() <= metrics_service["metadata"]["labels"].items()
    port_names = {p["name"] for p in metrics_service["spec"]["ports"]}
    for endpoint in doc["spec"]["endpoints"]:
        assert set(endpoint) == {"port", "path", "interval"}
        assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"


def test_every_document_is_valid_kubernetes(release: Release) -> None:
    for doc in release.docs:
        if doc["kind"] == "ServiceMonitor":
            check_service_monitor(doc, release)
        else:
            kubernetes_validate.validate(doc, KUBE, strict=True)


def test_strict_validation_catches_unknown_fields() -> None:
    deployment = render({}).one("Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE, strict=True)


def test_rendered_config_is_valid_and_matches_the_pod(release: Release) -> None:
    config = release.config
    container = release.container
    assert container["args"] == ["sshgate", "serve"] and container["args"][0] in console_scripts()
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert set(env) <= gateway_env_allowed(config)
    config_file = env["SSHGATE_CONFIG"]
    assert posixpath.dirname(config_file) == release.mount_of("config")
    assert release.container_port("ssh") == config.listen.port
    assert release.container_port("metrics") == metrics_port(config)
    assert release.mount_of("data") == config.data_dir
    assert "emptyDir" in release.volume("data") and "emptyDir" in release.volume("tmp")
    assert release.mount_of("tmp") == "/tmp"


def test_probes_and_drain(release: Release) -> None:
    container = release.container
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = release.pod["terminationGracePeriodSeconds"]
    assert grace > release.config.shutdown_grace_s + pre_stop


def test_non_root_read_only(release: Release) -> None:
    dockerfile_uid = next(
        line.split()[1].split(":")[0]
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if line.startswith("USER ")
    )
    pod = release.pod["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == int(dockerfile_uid) != 0
    container = release.container["securityContext"]
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    writable = {m["mountPath"] for m in release.container["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/var/lib/sshgate", "/tmp"}
    assert all(
        "emptyDir" in release.volume(m["name"])
        for m in release.container["volumeMounts"]
        if m["mountPath"] in writable
    )


def test_host_key_comes_from_one_secret(release: Release) -> None:
    (host_key,) = release.config.host_keys
    volume = release.volume("host-key")["secret"]
    assert posixpath.dirname(host_key) == release.mount_of("host-key")
    assert volume["items"] == [{"key": posixpath.basename(host_key), "path": posixpath.basename(host_key)}]
    existing = release.values.get("hostKey", {}).get("existingSecret")
    if existing:
        assert volume["secretName"] == existing
        assert "Secret" not in release.kinds()
    else:
        secret = release.one("Secret", "-host-key")
        assert volume["secretName"] == secret["metadata"]["name"]
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        pem = _b64(secret["data"][posixpath.basename(host_key)])
        assert asyncssh.import_private_key(pem).get_algorithm() == "ssh-ed25519"


def _b64(text: str) -> str:
    return base64.b64decode(text).decode()


def test_given_host_key_is_used_verbatim() -> None:
    key = asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()
    secret = render({"hostKey": {"value": key}}).one("Secret", "-host-key")
    assert _b64(secret["data"]["ssh_host_ed25519_key"]) == key


def test_policies_configmap_holds_every_configured_file(release: Release) -> None:
    files = release.one("ConfigMap", "-policies")["data"]
    mount = release.mount_of("policies")
    paths = release.config.policies.paths
    assert sorted(posixpath.basename(p) for p in paths) == sorted(files)
    assert all(posixpath.dirname(p) == mount for p in paths)
    if release.values.get("policies", {}).get("builtin", True):
        shipped = {
            p.name: p.read_text()
            for p in (REPO / "policies").glob("*.rego")
            if not p.name.endswith("_test.rego")
        }
        assert files == shipped
    else:
        assert files == release.values["policies"]["files"]


def test_service_maps_22_to_the_ssh_port(release: Release) -> None:
    service = release.one("Service", "gw-sshgate")
    values = {"type": "LoadBalancer", "port": 22, "externalTrafficPolicy": "Cluster"}
    values.update(release.values.get("service", {}))
    spec = service["spec"]
    assert spec["type"] == values["type"]
    assert spec["ports"] == [{"name": "ssh", "port": values["port"], "targetPort": "ssh", "protocol": "TCP"}]
    assert (
        spec["selector"].items()
        <= release.one("Deployment")["spec"]["template"]["metadata"]["labels"].items()
    )
    if spec["type"] == "LoadBalancer":
        assert spec["externalTrafficPolicy"] == values["externalTrafficPolicy"]
        annotations = service["metadata"]["annotations"]
        assert annotations["service.beta.kubernetes.io/aws-load-balancer-type"] == "external"
        assert annotations["service.beta.kubernetes.io/aws-load-balancer-healthcheck-path"] == "/readyz"
        assert int(
            annotations["service.beta.kubernetes.io/aws-load-balancer-healthcheck-port"]
        ) == metrics_port(release.config)
    else:
        assert "externalTrafficPolicy" not in spec


def test_nlb_local_hpa_release() -> None:
    release = render(values_of("nlb-local-hpa"))
    assert release.one("Service", "gw-sshgate")["spec"]["externalTrafficPolicy"] == "Local"
    assert "replicas" not in release.one("Deployment")["spec"]
    hpa = release.one("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"]["name"] == release.one("Deployment")["metadata"]["name"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)
    account = release.one("ServiceAccount")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == (
        "arn:aws:iam::123456789012:role/sshgate"
    )
    assert release.pod["serviceAccountName"] == account["metadata"]["name"]
    assert release.one("ServiceMonitor")["metadata"]["labels"]["release"] == "prometheus"
    assert release.config.recording.sink == "s3"


def test_default_release_objects() -> None:
    release = render({})
    assert release.kinds() == {
        "ConfigMap",
        "Secret",
        "ServiceAccount",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
    assert release.one("Deployment")["spec"]["replicas"] == 2
    pdb = release.one("PodDisruptionBudget")["spec"]
    assert pdb["selector"]["matchLabels"] == release.one("Deployment")["spec"]["selector"]["matchLabels"]
    policy = release.one("NetworkPolicy")["spec"]
    ports = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    assert ports == {p["name"] for p in release.container["ports"]}
    assert policy["policyTypes"] == ["Ingress"]


def test_existing_secret_release() -> None:
    release = render(values_of("existing-secret"))
    assert release.pod["serviceAccountName"] == "sshgate-runner"
    assert "ServiceAccount" not in release.kinds() and "PodDisruptionBudget" not in release.kinds()
    assert release.one("NetworkPolicy")["spec"]["policyTypes"] == ["Ingress", "Egress"]


def test_replicas_release_shares_state_and_reads_proxy_headers() -> None:
    release = render(values_of("replicas"))
    config = release.config
    assert config.state is not None
    assert (config.state.url, config.state.hmac_key) == ("ENV:SSHGATE_STATE_URL", "ENV:SSHGATE_STATE_HMAC")
    assert (config.state.timeout_ms, config.state.session_ttl_s) == (200, 30)
    assert config.listen.proxy_protocol and [str(n) for n in config.listen.trusted_proxies] == ["10.0.0.0/16"]
    secret = release.one("Secret", "-state")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["url"] == "rediss://valkey.cache.svc:6380/0" and len(data["hmac-key"]) >= 32
    env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in release.container["env"]}
    assert env["SSHGATE_STATE_URL"] == {"name": secret["metadata"]["name"], "key": "url"}
    assert env["SSHGATE_STATE_HMAC"] == {"name": secret["metadata"]["name"], "key": "hmac-key"}
    annotations = release.one("Service", "gw-sshgate")["metadata"]["annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-proxy-protocol"] == "*"
    assert "valkey" not in release.one("ConfigMap", "-config")["data"]["config.yaml"]  # the URL stays secret


def test_without_state_or_proxy_the_config_has_neither() -> None:
    release = render({})
    assert release.config.state is None and not release.config.listen.proxy_protocol
    assert not [d for d in release.docs if d["metadata"]["name"].endswith("-state")]
    annotations = release.one("Service", "gw-sshgate")["metadata"].get("annotations", {})
    assert "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol" not in annotations


def bad_values() -> Iterator[tuple[dict[str, Any], str]]:
    yield {"config": {"listen": {"port": 22}}}, "listen"
    yield {"config": {"policies": {"paths": ["/x"]}}}, "paths"
    yield {"service": {"externalTrafficPolicy": "Sideways"}}, "externalTrafficPolicy"
    yield {"hostKey": {"key": "a/b"}}, "key"
    yield {"replicas": 3}, "replicas"
    yield {"state": {"url": "http://valkey:6379"}}, "url"
    yield {"state": {"url": "redis://valkey:6379", "hmacKey": "short"}}, "hmacKey"
    yield {"config": {"state": {"url": "redis://x"}}}, "state"


@pytest.mark.parametrize(("values", "key"), list(bad_values()))
def test_schema_refuses_bad_values(values: dict[str, Any], key: str) -> None:
    report = helm_python.lint(CHART, values, strict=True, kube_version=f"v{KUBE}")
    assert report["errors"] and key in " ".join(report["errors"])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"terminationGracePeriodSeconds": 30}, "must exceed preStopSleepSeconds"),
        ({"config": {"shutdown_grace_s": 100}}, "must exceed preStopSleepSeconds"),
        ({"policies": {"builtin": False}}, "no policy files"),
        ({"proxyProtocol": {"enabled": True}}, "trustedProxies"),
    ],
)
def test_render_refuses_unsafe_settings(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=message):
        render(values)
