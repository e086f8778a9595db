"""Which exec lines count as file transfers (recorded as events, their bytes not kept)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sshgate.recording.channels import Options, TerminalChannel, TransferChannel, make_channel, transfer_of


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


def test_a_transfer_line_with_a_terminal_is_a_terminal_channel(tmp_path: Path) -> None:
    # scp and rsync never ask for a pty; a "transfer" with one is someone's shell (a function
    # named scp in their .bashrc), whose output is kept.
    meta = {"command": "scp -f /dev/null", "pty": False}
    made = make_channel(1, "exec", meta, lambda _c: None, tmp_path, Options())
    assert isinstance(made, TransferChannel)
    made = make_channel(2, "exec", {**meta, "pty": True}, lambda _c: None, tmp_path, Options())
    assert isinstance(made, TerminalChannel)
