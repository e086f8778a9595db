from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sshgate.cli import main
from sshgate.config import ConfigError, load_config, parse_config
from sshgate.state.build import build_state, state_secrets

RESOURCE = """
resources:
  - name: web-1
    type: ssh
    hostname: 10.0.0.5
    host_key_policy: {known_hosts: /etc/sshgate/known_hosts}
    native_users:
      - {username: ubuntu, secret: "ENV:WEB1_KEY", default: true}
"""


def test_design_example_parses() -> None:
    """Every section of the product spec's full example parses, including those later issues implement."""
    text = Path(__file__).with_name("design_example.yaml").read_text()
    config = parse_config(text)
    assert [r.type for r in config.resources] == ["ssh", "ec2", "ecs"]
    assert config.policies.engine == "embedded"
    assert config.limits.lockout_s == 300
    assert config.recording.s3 is not None and config.recording.s3.bucket == "my-recordings"
    assert config.recording.retention_days == 0 and not config.recording.transfer_data
    assert config.public_host_port == ("gw.corp.com", 22)
    assert config.discovery.interval_s == 60 and config.discovery.native_users[0].username == "ops"
    assert config.identities.oidc is not None and config.identities.oidc.mfa.max_age_s == 300
    assert config.state is not None and config.state.timeout_ms == 250
    assert "valkey" not in repr(config.state) and "SSHGATE_STATE_HMAC" not in repr(config.state)
    assert config.listen.proxy_protocol and str(config.listen.trusted_proxies[0]) == "10.0.0.0/8"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("state: {url: 'redis://r:6379/0'}", "state.hmac_key"),
        ("state: {hmac_key: ENV:K}", "state.url"),
        ("state: {url: 'http://r:6379', hmac_key: ENV:K}", "redis://"),
        ("state: {url: 'redis://r:6379', hmac_key: short}", "at least 32"),
        ("state: {url: 'redis://r:6379', hmac_key: ENV:K, timeout_ms: 0}", "state.timeout_ms"),
        ("listen: {proxy_protocol: true}", "trusted_proxies"),
        ("listen: {proxy_protocol: true, trusted_proxies: [10.0.0.300/8]}", "listen.trusted_proxies"),
        ("metrics: {listen: localhost}", "metrics.listen"),
        ("metrics: {listen: '127.0.0.1:70000'}", "metrics.listen"),
        ("metrics: {listen: ':9090x'}", "metrics.listen"),
        ("web: {listen: ':9090', public_url: 'https://gw.corp.com'}", "web.listen"),
    ],
)
def test_state_proxy_and_listen_keys_are_checked(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(text)


def test_state_secrets_follow_env_and_file_and_name_only_their_source(tmp_path: Path, monkeypatch: Any) -> None:
    (tmp_path / "url").write_text("rediss://:s3cret@valkey:6380/0\n")
    monkeypatch.setenv("SG_HMAC", "k" * 40)
    config = parse_config(f"state: {{url: 'FILE:{tmp_path / 'url'}', hmac_key: ENV:SG_HMAC}}")
    assert config.state is not None
    assert state_secrets(config.state) == ("rediss://:s3cret@valkey:6380/0", "k" * 40)
    monkeypatch.setenv("SG_HMAC", "k" * 31)
    with pytest.raises(ConfigError, match="at least 32") as short:
        state_secrets(config.state)
    monkeypatch.delenv("SG_HMAC")
    with pytest.raises(ConfigError, match="SG_HMAC") as missing:
        state_secrets(config.state)
    assert "s3cret" not in str(short.value) + str(missing.value)


@pytest.mark.parametrize(
    "url", ["unix:///run/redis/redis.sock?password=pa@ss&db=0", "redis://redis.internal:6379/0?password=pa@ss"]
)
def test_a_password_in_the_query_as_redis_py_reads_it_is_taken(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SG_URL", url)
    monkeypatch.setenv("SG_HMAC", "k" * 40)
    config = parse_config("state: {url: ENV:SG_URL, hmac_key: ENV:SG_HMAC}").state
    assert config is not None and state_secrets(config)[0] == url


@pytest.mark.parametrize(
    "url",
    [
        "redis://:Xk9pQ2secretpart#rest@redis.internal:6379/0",  # the rest read as the port
        "redis://:6379/secretpart@redis.internal:6379/0",  # a port, then the rest as the path
        "rediss://user:secret?part@redis.internal",
    ],
)
def test_a_state_url_with_an_unencoded_password_is_a_config_error_naming_only_its_source(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py would raise a ValueError quoting part of the password (docs/configuration.md, state)."""
    monkeypatch.setenv("SG_URL", url)
    monkeypatch.setenv("SG_HMAC", "k" * 40)
    path = tmp_path / "gw.yaml"
    path.write_text("state: {url: ENV:SG_URL, hmac_key: ENV:SG_HMAC}\n")
    assert main(["check-config", "--config", str(path)]) == 0  # it reads no secrets
    with pytest.raises(ConfigError, match="SG_URL") as serving:  # serve, keys and the web app
        build_state(load_config(path), lambda _up: None)
    assert "not a valid URL; percent-encode" in str(serving.value) and "secret" not in str(serving.value)
    monkeypatch.setenv("SG_URL", url.replace("#", "%23").replace("/secret", "%2Fsecret").replace("?", "%3F"))
    config = load_config(path).state
    assert config is not None and state_secrets(config)[0].startswith("redis")


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("{name: formal, issuer: 'https://idp.corp.com', client_id: c}", "reserved"),
        ("{name: Human, issuer: 'https://idp.corp.com', client_id: c}", "reserved"),
        ("{name: okta, issuer: 'http://idp.corp.com', client_id: c}", "https://"),
        ("{name: okta, issuer: 'https://idp.corp.com?x=1', client_id: c}", "https://"),
        ("{name: okta, issuer: 'https://idp.corp.com', client_id: c, scopes: [email]}", "openid"),
        ("{name: okta, issuer: 'https://idp.corp.com'}", "client_id"),
        ("{name: 'o k', issuer: 'https://idp.corp.com', client_id: c}", "name"),
    ],
)
def test_oidc_block_refusals(block: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(f"identities: {{oidc: {block}}}\n")


def test_oidc_block_defaults_and_loopback_http() -> None:
    oidc = parse_config("identities: {oidc: {name: kc, issuer: 'http://127.0.0.1:8080/', client_id: c}}\n")
    block = oidc.identities.oidc
    assert block is not None and block.issuer == "http://127.0.0.1:8080"
    assert (block.key_ttl_s, block.sign_in_timeout_s, block.scopes[0]) == (43200, 300, "openid")
    secret = "identities: {oidc: {name: kc, issuer: 'https://a.io', client_id: c, client_secret: s3cr3t}}\n"
    assert "s3cr3t" not in repr(parse_config(secret))


def test_unknown_key_names_key_and_line() -> None:
    text = RESOURCE + "    colour: blue\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "gw.yaml")
    assert "gw.yaml:9: resources.0.colour: unknown key" in str(info.value)


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0wmN/Cr3JXqmLW7u+g9pTh+wyqDHpSQEIQczXkVx9q"


@pytest.mark.parametrize(
    "bad",
    [
        "ssh-ed25519 AAAAbroken alice@laptop",
        f'from="10.0.0.0/8" {KEY}',  # authorized_keys options: a login compares bare keys only
        "alice@laptop",
        "",
    ],
)
def test_bad_key_lines_are_refused_at_load_naming_key_and_line(bad: str) -> None:
    text = f"""identities:
  users:
    - email: alice@corp.com
      authorized_keys:
        - "{KEY} alice@laptop"
        - '{bad}'
  machines:
    - name: ci-bot
      authorized_keys: ["{KEY}"]
  user_ca_keys: ['{bad}']
"""
    with pytest.raises(ConfigError) as err:
        parse_config(text, "gw.yaml")
    lines = str(err.value).splitlines()
    assert lines[0].startswith("gw.yaml:6: identities.users.0.authorized_keys.1: ")
    assert lines[1].startswith("gw.yaml:10: identities.user_ca_keys.0: ")
    assert all("not an SSH public key" in line for line in lines) and len(lines) == 2


def test_unknown_top_level_key() -> None:
    with pytest.raises(ConfigError, match=r"cfg:1: listn: unknown key"):
        parse_config("listn: {port: 1}\n", "cfg")


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("host_key_policy: {}", "exactly one of known_hosts"),
        ("host_key_policy: {known_hosts: /x, insecure_accept_any: true}", "exactly one of known_hosts"),
    ],
)
def test_host_key_policy_exactly_one(snippet: str, message: str) -> None:
    text = RESOURCE.replace("host_key_policy: {known_hosts: /etc/sshgate/known_hosts}", snippet)
    with pytest.raises(ConfigError, match=message):
        parse_config(text)


def test_direct_and_group_assignment_conflict() -> None:
    text = (
        "identities: {users: [{email: a@x.io, groups: [dev]}]}\n"
        + RESOURCE
        + "      - {username: ro, secret: x, users: [A@x.io]}\n"
        + "      - {username: rw, secret: x, groups: [dev]}\n"
    )
    with pytest.raises(ConfigError, match=r"assigned ro directly on web-1 and also through a group \(rw\)"):
        parse_config(text)
    same = text.replace("{username: rw, secret: x, groups: [dev]}", "{username: rw, secret: x}").replace(
        "users: [A@x.io]}", "users: [A@x.io], groups: [dev]}"
    )
    assert parse_config(same).resources[0].native_users[1].groups == ["dev"]


def test_two_group_native_users_conflict() -> None:
    text = (
        "identities: {users: [{email: a@x.io, groups: [dev, ops]}]}\n"
        + RESOURCE
        + "      - {username: ro, secret: x, groups: [dev]}\n"
        + "      - {username: rw, secret: x, groups: [ops]}\n"
    )
    with pytest.raises(ConfigError, match="different native users on web-1 through groups: ro, rw"):
        parse_config(text)


def test_duplicates_and_defaults_refused() -> None:
    with pytest.raises(ConfigError, match="more than one default"):
        parse_config(RESOURCE + "      - {username: other, secret: x, default: true}\n")
    with pytest.raises(ConfigError, match="duplicate resource name 'web-1'"):
        parse_config(RESOURCE + RESOURCE.replace("resources:\n", ""))


def test_relative_paths_resolve_against_config_file(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("data_dir: state\npolicies: {paths: [policies/]}\n")
    config = load_config(path)
    assert config.data_dir == str(tmp_path / "state")
    assert config.policies.paths == [str(tmp_path / "policies")]
    assert config.host_key_paths == [tmp_path / "state" / "ssh_host_ed25519_key"]


def test_secrets_not_in_repr() -> None:
    config = parse_config(RESOURCE.replace("ENV:WEB1_KEY", "hunter2-plaintext"))
    assert "hunter2" not in repr(config)


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(RESOURCE)
    assert main(["check-config", "--config", str(good)]) == 0
    assert "OK (1 resources" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(RESOURCE + "    port: nope\n")
    assert main(["check-config", "--config", str(bad)]) == 2
    assert "bad.yaml:9: resources.0.port" in capsys.readouterr().err


def test_a_yaml_syntax_error_names_its_line_but_never_quotes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """PyYAML's own message quotes the offending line, here a secret."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(RESOURCE.replace('"ENV:WEB1_KEY"', "@TOPSECRET-x"))
    assert main(["check-config", "--config", str(bad)]) == 2
    out = capsys.readouterr()
    assert "TOPSECRET" not in out.out + out.err
    assert "bad.yaml: not valid YAML: line 8, column " in out.err and "'@'" in out.err


@pytest.mark.parametrize(
    "value",
    [
        "*TOPSECRET-x",  # an undefined alias, named in the problem
        "!TOPSECRET-x v",  # an unknown tag
        "!!float TOPSECRET-x",  # a tag whose constructor raises ValueError quoting the value
        "!e!TOPSECRET-x v",  # an undefined tag handle
        "&TOPSECRET-x 1\n    also: &TOPSECRET-x 2",  # a duplicate anchor
        "2024-13-45",  # a date PyYAML cannot build (ValueError)
    ],
)
def test_no_yaml_error_quotes_a_value_from_the_file(value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(RESOURCE.replace('"ENV:WEB1_KEY"', value))
    assert "topsecret" not in str(refused.value).lower() and "2024-13" not in str(refused.value)


@pytest.mark.parametrize("name", ["list", "ssh-config"])
def test_reserved_resource_names(name: str) -> None:
    with pytest.raises(ConfigError, match=f"'{name}' is a word of the remote command"):
        parse_config(RESOURCE.replace("name: web-1", f"name: {name}"))


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("gw.corp.com", ("gw.corp.com", 22)),
        ("gw.corp.com:2222", ("gw.corp.com", 2222)),
        ("[2001:db8::1]:22", ("2001:db8::1", 22)),
        ("10.0.0.1:0", None),
        ("gw corp", None),
        ("gw.corp.com:22\nHost *", None),
        ("-oProxyCommand=x", None),
    ],
)
def test_public_address(address: str, expected: tuple[str, int] | None) -> None:
    text = f"public_address: {json.dumps(address)}\n"
    if expected is None:
        with pytest.raises(ConfigError, match="public_address is HOST"):
            parse_config(text)
    else:
        assert parse_config(text).public_host_port == expected


def test_native_users_may_be_left_out_only_where_there_is_an_ambient_identity() -> None:
    with pytest.raises(ConfigError, match=r"resources.0.native_users: Field required"):
        parse_config(
            RESOURCE.replace(
                '    native_users:\n      - {username: ubuntu, secret: "ENV:WEB1_KEY", default: true}\n', ""
            )
        )
    config = parse_config(
        "resources: [{name: app, type: ec2, instance_id: i-1}, {name: api, type: ecs, cluster: c, task: t}]"
    )
    assert [r.native_users for r in config.resources] == [[], []]


def test_discovery_native_users_are_checked_like_a_resource_s() -> None:
    text = (
        "identities: {users: [{email: a@x.io, groups: [dev, ops]}]}\n"
        "discovery: {native_users: [{username: ro, secret: iam, groups: [dev]}, {username: rw, secret: iam, groups: [ops]}]}\n"
    )
    with pytest.raises(ConfigError, match="different native users on discovered resources through groups"):
        parse_config(text)
