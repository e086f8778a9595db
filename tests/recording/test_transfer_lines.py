"""Which exec lines count as file transfers (recorded as events, their bytes not kept)."""

from __future__ import annotations

import pytest

from sshgate.recording.channels import transfer_of


@pytest.mark.parametrize(
    ("command", "protocol", "paths"),
    [
        ("scp -t -- /tmp/x", "scp", ["/tmp/x"]),
        ("scp -f '/tmp/my dir/a b'", "scp", ["/tmp/my dir/a b"]),
        ('scp -v -f "/tmp/it\'s"', "scp", ["/tmp/it's"]),
        ("/usr/bin/scp -r -t /tmp/*.log", "scp", ["/tmp/*.log"]),
        ("rsync --server -vlogDtpre.iLsfxCIvu . /tmp/my\\ dir", "rsync", ["/tmp/my dir"]),
        ("rsync --server --sender -logDtpre.iLsfxCIvu . 'a;b'", "rsync", ["a;b"]),
        ("scp -f '$(not expanded)'", "scp", ["$(not expanded)"]),
    ],
)
def test_what_scp_and_rsync_send_is_a_transfer(command: str, protocol: str, paths: list[str]) -> None:
    found = transfer_of(command)
    assert found is not None and found["protocol"] == protocol and found["paths"] == paths


@pytest.mark.parametrize(
    "command",
    [
        "scp -f x; cat /etc/shadow",
        "scp -f x && bash -i",
        "scp -f x | tee y",
        "scp -f x > y",
        "scp -f x < /dev/null",
        "scp -f x & cat secret",
        "scp -f $(cat secret >&2)",
        'scp -f "$(cat secret >&2)"',
        "scp -f `id`",
        "scp -f $HOME",
        "scp -f x\ncat secret",
        "(scp -f x)",
        "{ scp -f x; }",
        "scp -f 'unterminated",
        "scp -f x\\",
        "./scp -f x",
        "/tmp/scp -f x",
        "~/bin/rsync --server . x",
        "rsync --server . x; id",
        "scp x y",
        "rsync -av x y",
        "SCP=1 scp -f x",
        None,
    ],
)
def test_anything_more_is_a_command(command: str | None) -> None:
    assert transfer_of(command) is None
