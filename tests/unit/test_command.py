from __future__ import annotations

import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sshgate.command import NUL_IN_COMMAND, CommandError, ListResources, Route, SshConfig, parse_command
from sshgate.login import is_name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("formal web-1", Route("web-1")),
        ("sshgate web-1", Route("web-1")),
        ("formal list", ListResources()),
        ("formal list --detailed", ListResources(detailed=True)),
        ("formal ssh-config", SshConfig()),
        ("formal ssh-config --prefix corp- --vscode", SshConfig("corp-", vscode=True)),
        ("sshgate ssh-config --vscode --prefix=gw.", SshConfig("gw.", vscode=True)),
        ("formal web-1 -- uname -a", Route("web-1", command="uname -a")),
        (
            "formal web-1 --native-user ro -- sh -c 'echo a; exit 4'",
            Route("web-1", "ro", command="sh -c 'echo a; exit 4'"),
        ),
        ("formal api --container app --task abc123", Route("api", container="app", task="abc123")),
        ("formal web-1 --native-user=ro", Route("web-1", "ro")),
        (
            "formal api --shell \"/bin/bash -c 'exec env INPUTRC=~/.ssh_inputrc /bin/bash'\"",
            Route("api", shell="/bin/bash -c 'exec env INPUTRC=~/.ssh_inputrc /bin/bash'"),
        ),
        ("ls -la", None),
        ("scp -t /tmp", None),
        ("rsync --server -logDtpre.iLsfxCIvu . /tmp/x", None),
        ("formalities", None),
    ],
)
def test_parse(text: str, expected: object) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("formal", "usage: formal"),
        ("formal web-1 --bogus", "unknown option"),
        ("formal web-1 --shell", "needs a value"),
        ("formal web-1 --", "nothing after"),
        ("formal 'web 1'", "invalid resource"),
        ("formal web-1 --native-user 'a b'", "invalid native user"),
        ("formal web-1 --shell 'unterminated", "cannot parse"),
        ("formal list --bogus", "unknown option"),
        ("formal list -- ls", "runs no command"),
        ("formal ssh-config --native-user x", "unknown option"),
        ("formal ssh-config --vscode=yes", "unknown option"),
        ("formal ssh-config --prefix", "needs a value"),
        ("formal ssh-config --prefix '*'", "invalid prefix"),
        ("formal ssh-config --prefix ''", "invalid prefix"),
        ("formal ssh-config --prefix 'a b'", "invalid prefix"),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        parse_command(text)


@given(st.text(max_size=40))
def test_ssh_config_prefix_is_a_plain_name_or_refused(prefix: str) -> None:
    """The prefix becomes ``Host <prefix>*``: it never carries a glob, a blank or a quote."""
    try:
        parsed = parse_command(f"formal ssh-config --prefix {shlex.quote(prefix)}")
    except CommandError:
        return
    assert isinstance(parsed, SshConfig) and parsed.prefix == prefix and is_name(prefix)


@pytest.mark.parametrize("text", ["echo a\0b", "formal list\0", "formal web-1 -- id\0"])
def test_a_nul_byte_anywhere_is_refused_with_status_1(text: str) -> None:
    with pytest.raises(CommandError) as refused:
        parse_command(text)
    assert (str(refused.value), refused.value.exit_status) == (NUL_IN_COMMAND, 1)
