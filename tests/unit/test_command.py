from __future__ import annotations

import pytest

from sshgate.command import CommandError, ListResources, Route, parse_command


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("formal web-1", Route("web-1")),
        ("sshgate web-1", Route("web-1")),
        ("formal list", ListResources()),
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
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        parse_command(text)
