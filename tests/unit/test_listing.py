"""What `formal list` and `formal ssh-config` print; the ssh_config is read back by OpenSSH itself
(`ssh -G`, which resolves a Host without connecting)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sshgate.listing import GatewayAddress, Listed, known_hosts_name, list_text, ssh_config_text

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ7BhPRcSAxy4eeVDRNSLiw3xOXGB8IYmkkjNlXswv3e"
ROWS = [
    Listed("web-1", "ssh", "sgtest", "alice+web-1", tags={"env": "prod", "team": "a"}),
    Listed("app-prod", "ec2", "iam", "alice+app-prod", "stopped", "eu-west-1", sshd=False),
]


def resolved(config: str, host: str, tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "ssh_config"
    path.write_text(config)
    out = subprocess.run(["ssh", "-F", str(path), "-G", host], capture_output=True, text=True, check=True)
    return {k: v for k, _, v in (line.partition(" ") for line in out.stdout.splitlines())}


def test_list_plain_and_detailed() -> None:
    assert list_text(ROWS) == "web-1\tssh\tsgtest\napp-prod\tec2\tiam\n"
    assert list_text(ROWS, detailed=True) == (
        "web-1\tssh\tsgtest\t-\t-\tenv=prod,team=a\napp-prod\tec2\tiam\tstopped\teu-west-1\t-\n"
    )


def test_list_fields_cannot_break_lines_or_drive_the_terminal() -> None:
    row = Listed("x", "ec2", "iam", tags={"k": "a\tb\x1b]0;pwned\x07\nc"})
    assert list_text([row], detailed=True) == "x\tec2\tiam\t-\t-\tk=a?b?]0;pwned??c\n"


def test_known_hosts_name() -> None:
    assert known_hosts_name("gw.corp.com", 22) == "gw.corp.com"
    assert known_hosts_name("::1", 2222) == "[::1]:2222"


def test_ssh_config_resolves_per_host(tmp_path: Path) -> None:
    text = ssh_config_text(ROWS, GatewayAddress("gw.corp.com", 2222, [KEY]), "alice@corp.com", "sshgate-")
    assert f"# sshgate_known_hosts: [gw.corp.com]:2222 {KEY}\n" in text
    web = resolved(text, "sshgate-web-1", tmp_path)
    assert (web["user"], web["hostname"], web["port"]) == ("alice+web-1", "gw.corp.com", "2222")
    assert web["userknownhostsfile"].endswith("/.ssh/sshgate_known_hosts")
    assert (web["stricthostkeychecking"], web["serveraliveinterval"]) == ("true", "30")
    assert web["requesttty"] == "auto"  # left to the client
    assert resolved(text, "sshgate-app-prod", tmp_path)["user"] == "alice+app-prod"
    assert resolved(text, "elsewhere", tmp_path)["hostname"] == "elsewhere"


def test_no_line_break_in_the_gateway_address_reaches_the_output(tmp_path: Path) -> None:
    # Defence in depth behind the PROXY parser, which refuses such an address: the known-hosts
    # comment must not end early and let a ProxyCommand line through to the user's ssh.
    host = "fe80::1%h\nProxyCommand=sh -c 'id>PWNED'\n#"
    text = ssh_config_text(ROWS, GatewayAddress(host, 2222, [KEY]), "alice@corp.com", "sshgate-")
    assert not [line for line in text.splitlines() if line.lstrip().lower().startswith("proxycommand")]
    assert "proxycommand" not in resolved(text, "sshgate-web-1", tmp_path)


def test_vscode_adds_what_remote_ssh_needs(tmp_path: Path) -> None:
    text = ssh_config_text(ROWS, GatewayAddress("127.0.0.1", 22, [KEY]), "a@b.c", "vs.", vscode=True)
    web = resolved(text, "vs.web-1", tmp_path)
    assert (web["requesttty"], web["connecttimeout"], web["port"]) == ("false", "60", "22")
    assert '#   "remote.SSH.remotePlatform": {"vs.web-1": "linux", "vs.app-prod": "linux"}' in text
    assert '#   "remote.SSH.useExecServer": false,' in text  # app-prod has no sshd behind it
    only_sshd = ssh_config_text(ROWS[:1], GatewayAddress("h", 22, [KEY]), "a@b.c", "vs.", vscode=True)
    assert '#   "remote.SSH.useExecServer": true,' in only_sshd


@pytest.mark.parametrize(
    "login",
    ["idp:okta:human:o'neil#x@corp.com+web-1", "idp:human:a=b{c}~d@corp.com+web-1", "idp:machine:ci+web-1"],
)
def test_user_values_survive_ssh_config_quoting(login: str, tmp_path: Path) -> None:
    text = ssh_config_text([Listed("web-1", "ssh", "u", login)], GatewayAddress("h", 22, []), "x", "p-")
    assert resolved(text, "p-web-1", tmp_path)["user"] == login


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(who=st.text(max_size=60))
def test_who_is_only_ever_a_comment(who: str, tmp_path: Path) -> None:
    text = ssh_config_text(ROWS, GatewayAddress("h", 22, [KEY]), who, "p-")
    assert text.count("\n# sshgate: ") == 0 and text.startswith("# sshgate: Host blocks for ")
    assert resolved(text, "p-web-1", tmp_path)["user"] == "alice+web-1"
