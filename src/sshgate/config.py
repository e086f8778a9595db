"""The configuration file of docs/configuration.md: pydantic models plus a loader that names lines.

Everything is validated at load so a bad file is refused as a whole (at start-up or on
SIGHUP) instead of failing half-way through a user's session.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import asyncssh
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sshgate.login import NAME_PATTERN

Name = Annotated[str, Field(pattern=f"^{NAME_PATTERN}$")]
# Words of the remote command (docs/login.md): `formal list` must never mean a resource.
RESERVED_RESOURCE_NAMES = frozenset({"list", "ssh-config"})
# `host`, `host:port` or `[v6]:port`: it is printed into users' ssh_config, so nothing else.
_PUBLIC_ADDRESS = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9][A-Za-z0-9.-]{0,252}))(?::(?P<port>\d{1,5}))?"
)


def _public_key_line(value: str) -> str:
    """One OpenSSH public key line (``TYPE BASE64 [comment]``), as logins compare them."""
    try:
        asyncssh.import_public_key(value)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise ValueError(f"not an SSH public key ('TYPE BASE64 [comment]'): {exc}") from None
    return value


# A key line checked at load: a bad one is a config error naming its line, not a key that never matches.
PublicKeyLine = Annotated[str, AfterValidator(_public_key_line)]


class ConfigError(Exception):
    """A configuration that cannot be served; the message names the file, key and line."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listen(_Model):
    host: str = "0.0.0.0"
    port: int = Field(2222, ge=0, le=65535)
    # Behind a TCP load balancer (docs/operations.md, "Replicas"): every connection starts with a
    # PROXY v1/v2 header, accepted only from these networks.
    proxy_protocol: bool = False
    trusted_proxies: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []

    @model_validator(mode="after")
    def _proxies_named(self) -> Listen:
        if self.proxy_protocol and not self.trusted_proxies:
            raise ValueError("proxy_protocol: true needs trusted_proxies (the load balancers' networks)")
        return self


class UserConfig(_Model):
    email: str
    login: Name | None = None
    groups: list[str] = []
    authorized_keys: list[PublicKeyLine] = []
    tokens: list[str] = Field(default=[], repr=False)

    @field_validator("email")
    @classmethod
    def _lower_email(cls, value: str) -> str:
        if "@" not in value:
            raise ValueError("an email address needs an '@'")
        return value.lower()


class MachineConfig(_Model):
    name: Name
    groups: list[str] = []
    authorized_keys: list[PublicKeyLine] = []
    tokens: list[str] = Field(default=[], repr=False)


RESERVED_PROVIDER_NAMES = frozenset({"formal", "human", "machine"})


class MfaSettings(_Model):
    """What a policy's ``mfa`` action asks of the provider (docs/oidc.md)."""

    max_age_s: int = Field(300, ge=1)
    acr_values: str = ""


class OidcConfig(_Model):
    """``identities.oidc``: single sign-on with the device authorization grant (docs/oidc.md)."""

    name: Name
    issuer: str
    client_id: str = Field(min_length=1)
    client_secret: str | None = Field(None, repr=False)
    scopes: list[str] = ["openid", "email", "profile", "groups"]
    email_claim: str = "email"
    groups_claim: str = "groups"
    allowed_domains: list[str] = []
    key_ttl_s: int = Field(43200, ge=1)
    sign_in_timeout_s: int = Field(300, ge=5)
    mfa: MfaSettings = Field(default_factory=MfaSettings)

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.lower() in RESERVED_PROVIDER_NAMES:
            raise ValueError(f"{value!r} is reserved; name the provider after the company's IdP")
        return value

    @field_validator("issuer")
    @classmethod
    def _https_issuer(cls, value: str) -> str:
        if not issuer_allowed(value):
            raise ValueError("the issuer must be an https:// URL (http:// only for 127.0.0.1 or localhost)")
        return value.rstrip("/")

    @field_validator("allowed_domains")
    @classmethod
    def _lower_domains(cls, value: list[str]) -> list[str]:
        return [v.lower() for v in value]

    @field_validator("scopes")
    @classmethod
    def _openid_scope(cls, value: list[str]) -> list[str]:
        if "openid" not in value:
            raise ValueError("scopes must include openid")
        return value


def issuer_allowed(url: str) -> bool:
    """https anywhere; plain http only to this machine, where nobody can read the wire."""
    parts = urlsplit(url)
    if not parts.hostname or parts.query or parts.fragment:
        return False
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


class Identities(_Model):
    users: list[UserConfig] = []
    machines: list[MachineConfig] = []
    user_ca_keys: list[PublicKeyLine] = []
    # OpenSSH's RevokedKeys: a KRL (ssh-keygen -k) or a list of public keys (docs/configuration.md).
    revoked_keys: str | None = None
    oidc: OidcConfig | None = None

    @model_validator(mode="after")
    def _unique(self) -> Identities:
        _require_unique((u.email for u in self.users), "user email")
        _require_unique((u.login for u in self.users if u.login), "user login alias")
        _require_unique((m.name for m in self.machines), "machine name")
        return self


class HostKeyPolicy(_Model):
    """How the gateway trusts an upstream sshd: exactly one of the four."""

    known_hosts: str | None = None
    host_keys: list[str] | None = None
    host_ca_keys: list[str] | None = None
    insecure_accept_any: bool = False

    @model_validator(mode="after")
    def _exactly_one(self) -> HostKeyPolicy:
        chosen = [
            self.known_hosts is not None,
            self.host_keys is not None,
            self.host_ca_keys is not None,
            self.insecure_accept_any,
        ]
        if sum(chosen) != 1:
            raise ValueError(
                "set exactly one of known_hosts, host_keys, host_ca_keys or insecure_accept_any: true"
            )
        return self


class NativeUser(_Model):
    username: Name
    secret: str = Field(repr=False)
    default: bool = False
    users: list[str] = []
    groups: list[str] = []

    @field_validator("users")
    @classmethod
    def _lower_users(cls, value: list[str]) -> list[str]:
        return [v.lower() for v in value]


class _ResourceBase(_Model):
    name: Name
    tags: dict[str, str] = {}
    native_users: list[NativeUser] = []
    allow_agent_forwarding: bool = False

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_RESOURCE_NAMES:
            raise ValueError(
                f"{value!r} is a word of the remote command (formal {value}), not a resource name"
            )
        return value

    @model_validator(mode="after")
    def _native_users_consistent(self) -> _ResourceBase:
        _require_unique((n.username for n in self.native_users), f"native user on {self.name}")
        if sum(n.default for n in self.native_users) > 1:
            raise ValueError(f"resource {self.name} has more than one default native user")
        return self


class SshSettings(_Model):
    """``ssh:`` of an EC2 resource: full SSH to the instance's sshd through an SSM port session."""

    user: str | None = None
    port: int = Field(22, ge=1, le=65535)
    instance_connect: bool = False
    instance_id: str | None = None
    host_key_policy: HostKeyPolicy | None = None


class SshResource(_ResourceBase):
    type: Literal["ssh"]
    native_users: list[NativeUser]  # required: an sshd has no ambient identity
    hostname: str
    port: int = Field(22, ge=1, le=65535)
    host_key_policy: HostKeyPolicy
    connect_timeout_s: float = Field(10.0, gt=0)
    ssh: SshSettings | None = None


class Ec2Resource(_ResourceBase):
    type: Literal["ec2"]
    instance_id: str | None = None
    instance_name: str | None = None
    region: str | None = None
    start_if_stopped: bool = False
    start_timeout_s: float = Field(300.0, gt=0)
    select: Literal["one", "newest", "any"] = "one"
    ssh: SshSettings | None = None
    command_document: str = "SSHGate-NonInteractiveCommands"

    @model_validator(mode="after")
    def _one_instance(self) -> Ec2Resource:
        if (self.instance_id is None) == (self.instance_name is None):
            raise ValueError(f"resource {self.name}: set exactly one of instance_id or instance_name")
        return self


class EcsResource(_ResourceBase):
    type: Literal["ecs"]
    cluster: str
    service: str | None = None
    task: str | None = None
    container: str | None = None
    containers: list[str] = []
    region: str | None = None
    shell: str = "/bin/sh"

    @model_validator(mode="after")
    def _one_target(self) -> EcsResource:
        if (self.service is None) == (self.task is None):
            raise ValueError(f"resource {self.name}: set exactly one of service or task")
        if self.container is not None and self.containers:
            raise ValueError(f"resource {self.name}: set container or containers, not both")
        _require_unique(self.containers, f"container of {self.name}")
        return self

    @property
    def container_names(self) -> tuple[str, ...]:
        """The containers ``--container`` may choose, the default first. Empty: the task's first
        container only (docs/login.md, "ECS targets")."""
        return tuple(self.containers) or ((self.container,) if self.container else ())


AnyResource = SshResource | Ec2Resource | EcsResource
Resource = Annotated[AnyResource, Field(discriminator="type")]


class EcsDiscovery(_Model):
    """One resource per ACTIVE service of ``clusters`` (every cluster when empty)."""

    enabled: bool = False
    clusters: list[str] = []
    region: str | None = None
    container: str | None = None
    shell: str = "/bin/sh"


class Ec2Discovery(_Model):
    """One resource per instance whose tags match every ``tag_filters`` entry."""

    enabled: bool = False
    region: str | None = None
    tag_filters: dict[str, str] = {}


class Discovery(_Model):
    interval_s: float = Field(60.0, ge=1)
    ecs: EcsDiscovery = Field(default_factory=EcsDiscovery)
    ec2: Ec2Discovery = Field(default_factory=Ec2Discovery)
    native_users: list[NativeUser] = []

    @model_validator(mode="after")
    def _one_default(self) -> Discovery:
        _require_unique((n.username for n in self.native_users), "native user of discovered resources")
        if sum(n.default for n in self.native_users) > 1:
            raise ValueError("discovery.native_users has more than one default")
        return self


class Policies(_Model):
    engine: Literal["embedded", "opa"] = "embedded"
    paths: list[str] = []
    opa_url: str = "http://127.0.0.1:8181"
    default_action: Literal["allow", "block"] = "allow"
    timeout_ms: int = Field(500, gt=0)


class S3Recording(_Model):
    bucket: str
    prefix: str = ""
    region: str | None = None


class Recording(_Model):
    sink: Literal["local", "s3"] = "local"
    dir: str | None = None
    s3: S3Recording | None = None
    capture_input: bool = False
    forward_data: bool = False
    transfer_data: bool = False
    signing_key: str | None = None
    retention_days: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _s3_needs_bucket(self) -> Recording:
        if self.sink == "s3" and self.s3 is None:
            raise ValueError("recording.sink is s3 but recording.s3 is missing")
        return self


class Aws(_Model):
    region: str | None = None
    endpoints: dict[Literal["ec2", "ecs", "ssm", "sts", "s3", "ec2-instance-connect"], str] = {}


class Limits(_Model):
    max_sessions_per_user: int = Field(20, ge=1)
    idle_timeout_s: float = Field(3600, gt=0)
    max_session_s: float = Field(43200, gt=0)
    login_grace_s: float = Field(30, gt=0)
    max_unauthenticated: int = Field(100, ge=1)
    max_unauthenticated_per_source: int = Field(10, ge=1)
    max_auth_tries: int = Field(6, ge=1)
    auth_failures_before_lockout: int = Field(10, ge=1)
    lockout_s: float = Field(300, ge=0)
    # Per connection, as OpenSSH's MaxSessions: each session channel is an upstream session (an
    # SSM StartSession for EC2/ECS), so one connection must not open them without end.
    max_session_channels_per_connection: int = Field(10, ge=1)
    max_forwards_per_connection: int = Field(256, ge=1)


def _listen_host(value: str) -> str | None:
    """The host of ``HOST:PORT`` or ``[IPv6]:PORT`` (``""`` when left out); None if not one."""
    host, sep, port = value.rpartition(":")
    return host if sep and port.isascii() and port.isdigit() and int(port) < 65536 else None


class MetricsConfig(_Model):
    listen: str | None = "127.0.0.1:9090"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        """Checked at load, as the SSH and web addresses: else serve fails after check-config passed."""
        if value is not None and _listen_host(value) is None:
            raise ValueError("metrics.listen must be HOST:PORT, [IPv6]:PORT or :PORT")
        return value


MIN_HMAC_KEY_CHARS = 32


class State(_Model):
    """``state:``: what replicas share, in Redis or Valkey (docs/operations.md, "Replicas")."""

    url: str = Field(repr=False)  # may hold a password; ENV:/FILE: read at start
    key_prefix: str = "sshgate:"
    timeout_ms: int = Field(250, ge=1, le=10_000)
    session_ttl_s: int = Field(30, ge=3)
    hmac_key: str = Field(repr=False)

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(("ENV:", "FILE:", "redis://", "rediss://", "unix://")):
            raise ValueError("state.url must be redis://, rediss:// (TLS), unix://, ENV:NAME or FILE:/path")
        return value

    @field_validator("hmac_key")
    @classmethod
    def _long_key(cls, value: str) -> str:
        if not value.startswith(("ENV:", "FILE:")) and len(value) < MIN_HMAC_KEY_CHARS:
            raise ValueError(f"state.hmac_key must be at least {MIN_HMAC_KEY_CHARS} characters")
        return value


class WebTls(_Model):
    cert: str
    key: str


class Web(_Model):
    """``web:``: the sessions web app and its JSON API (docs/api.md); off when absent."""

    listen: str
    public_url: str
    tls: WebTls | None = None
    viewer_groups: list[str] = []
    admin_groups: list[str] = []

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        if not _listen_host(value):
            raise ValueError("web.listen must be HOST:PORT or [IPv6]:PORT")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if not _WEB_URL.fullmatch(value):
            raise ValueError(
                "web.public_url must be an http:// or https:// URL without path, query or fragment"
            )
        return value.rstrip("/")


_WEB_URL = re.compile(r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?/?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?/?")


class Config(_Model):
    listen: Listen = Field(default_factory=lambda: Listen())
    public_address: str | None = None
    host_keys: list[str] = []
    data_dir: str = "/var/lib/sshgate"
    workers: int = Field(1, ge=1, le=64)
    identities: Identities = Field(default_factory=Identities)
    resources: list[Resource] = []
    discovery: Discovery = Field(default_factory=Discovery)
    policies: Policies = Field(default_factory=lambda: Policies())
    recording: Recording = Field(default_factory=Recording)
    aws: Aws = Field(default_factory=Aws)
    limits: Limits = Field(default_factory=lambda: Limits())
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    state: State | None = None
    web: Web | None = None
    shutdown_grace_s: float = Field(30, ge=0)

    @field_validator("public_address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            match = _PUBLIC_ADDRESS.fullmatch(value)
            if match is None or not 0 < int(match.group("port") or 22) < 65536:
                raise ValueError("public_address is HOST, HOST:PORT or [IPv6]:PORT")
        return value

    @property
    def public_host_port(self) -> tuple[str, int] | None:
        """``public_address`` split; None when it is not set."""
        if self.public_address is None:
            return None
        match = _PUBLIC_ADDRESS.fullmatch(self.public_address)
        assert match is not None
        return match.group("v6") or match.group("host"), int(match.group("port") or 22)

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        _require_unique((r.name for r in self.resources), "resource name")
        if self.workers > 1 and self.listen.port == 0:
            raise ValueError("workers > 1 share listen.port with SO_REUSEPORT: set a fixed port, not 0")
        for resource in self.resources:
            for user in self.identities.users:
                _check_assignments(resource.name, resource.native_users, user)
        for user in self.identities.users:
            _check_assignments("discovered resources", self.discovery.native_users, user)
        return self

    def resource(self, name: str) -> SshResource | Ec2Resource | EcsResource | None:
        for resource in self.resources:
            if resource.name == name:
                return resource
        return None

    @property
    def host_key_paths(self) -> list[Path]:
        if self.host_keys:
            return [Path(p) for p in self.host_keys]
        return [Path(self.data_dir) / "ssh_host_ed25519_key"]

    @property
    def recording_dir(self) -> Path:
        return Path(self.recording.dir) if self.recording.dir else Path(self.data_dir) / "recordings"


def _require_unique(values: Iterator[str] | Any, what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate {what} {value!r}")
        seen.add(value)


def _check_assignments(where: str, native_users: list[NativeUser], user: UserConfig) -> None:
    """A direct assignment excludes a *different* group one, and groups must agree.

    The same native user reached both directly and through a group (as in the product
    spec's own example) is not ambiguous, so it is allowed.
    """
    direct = [n.username for n in native_users if user.email in n.users]
    via_groups = {n.username for n in native_users if set(n.groups) & set(user.groups)}
    if len(direct) > 1:
        raise ValueError(f"{user.email} is assigned several native users on {where}: {direct}")
    if direct and via_groups - {direct[0]}:
        raise ValueError(
            f"{user.email} is assigned {direct[0]} directly on {where} and also through a group "
            f"({', '.join(sorted(via_groups - {direct[0]}))}); remove one of the two"
        )
    if len(via_groups) > 1:
        raise ValueError(
            f"{user.email} gets different native users on {where} through groups: "
            f"{', '.join(sorted(via_groups))}"
        )


def _line_index(node: yaml.Node, path: tuple[str | int, ...], out: dict[tuple[str | int, ...], int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out[(*path, key.value)] = key.start_mark.line + 1
            _line_index(value, (*path, key.value), out)
            out[(*path, key.value)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, (*path, i), out)


def _describe(error: ValidationError, lines: dict[tuple[str | int, ...], int], source: str) -> str:
    messages = []
    for item in error.errors():
        loc = tuple(item["loc"])
        # A discriminated union adds its tag ('ssh') to the location; the file has no such key.
        if len(loc) > 2 and loc[0] == "resources" and loc[2] in ("ssh", "ec2", "ecs"):
            loc = loc[:2] + loc[3:]
        line = next((lines[loc[:i]] for i in range(len(loc), -1, -1) if loc[:i] in lines), None)
        where = ".".join(str(p) for p in loc) or "(top level)"
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        prefix = f"{source}:{line}" if line else source
        messages.append(f"{prefix}: {where}: {message}")
    return "\n".join(messages)


# What PyYAML quotes from the file inside its own problem text (an alias, a tag, an anchor:
# ``found undefined alias 'S3cr3t'``); token names such as '<block end>' and one punctuation
# character (',', ']', '@') stay.
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_HARMLESS = re.compile(r"'<[a-z ]+>'|'[^\w\s]'")


def _unquoted(text: str) -> str:
    return _QUOTED.sub(lambda m: m[0] if _HARMLESS.fullmatch(m[0]) else "'...'", text)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What and where, never the text: PyYAML's message quotes the line, and its problem may quote
    a word from it, either of which may be a secret."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        what = ": ".join(_unquoted(part) for part in (exc.context, exc.problem) if part)
        return f"line {mark.line + 1}, column {mark.column + 1}: {what}"
    return str(exc)  # a ReaderError names one character by its code point and its position


def parse_config(text: str, source: str = "<config>") -> Config:
    """Validate YAML text; relative paths stay relative (see :func:`load_config`)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {_yaml_problem(exc)}") from None
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        # An explicit tag or a date PyYAML cannot build (``!!float s3cr3t``, ``2024-13-45``): its
        # message quotes the value.
        raise ConfigError(
            f"{source}: a value could not be read (check explicit !!tags and dates)"
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    lines: dict[tuple[str | int, ...], int] = {}
    if node is not None:
        _line_index(node, (), lines)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, lines, source)) from None


def _resolve(base: Path, value: str) -> str:
    path = Path(value)
    return value if path.is_absolute() else str(base / path)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file; relative paths in it are relative to the file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    config = parse_config(text, str(file))
    base = file.resolve().parent
    updates: dict[str, Any] = {
        "data_dir": _resolve(base, config.data_dir),
        "host_keys": [_resolve(base, p) for p in config.host_keys],
        "policies": config.policies.model_copy(
            update={"paths": [_resolve(base, p) for p in config.policies.paths]}
        ),
    }
    if config.identities.revoked_keys:
        updates["identities"] = config.identities.model_copy(
            update={"revoked_keys": _resolve(base, config.identities.revoked_keys)}
        )
    recording: dict[str, Any] = {}
    if config.recording.dir:
        recording["dir"] = _resolve(base, config.recording.dir)
    if config.recording.signing_key:
        recording["signing_key"] = _resolve(base, config.recording.signing_key)
    if recording:
        updates["recording"] = config.recording.model_copy(update=recording)
    return config.model_copy(update=updates)


def config_path_from_env(explicit: str | None) -> str:
    """``--config`` wins, then ``SSHGATE_CONFIG``; otherwise a clear error."""
    path = explicit or os.environ.get("SSHGATE_CONFIG")
    if not path:
        raise ConfigError("no configuration: pass --config FILE or set SSHGATE_CONFIG")
    return path
