"""The tracker against OpenSSH's own sftp client and sftp-server, with a tap between them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sshgate.sftp.tracker import SftpTracker

TAP = """
import os, selectors, subprocess, sys
server = subprocess.Popen([sys.argv[1], "-d", sys.argv[2]], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
up, down = open(sys.argv[3], "wb"), open(sys.argv[4], "wb")
sel = selectors.DefaultSelector()
sel.register(0, selectors.EVENT_READ, (server.stdin.fileno(), up))
sel.register(server.stdout.fileno(), selectors.EVENT_READ, (1, down))
while sel.get_map():
    for key, _ in sel.select(10):
        target, log = key.data
        data = os.read(key.fd, 65536)
        if not data:
            sel.unregister(key.fd)
            os.close(target)
            continue
        log.write(data)
        os.write(target, data)
up.close(); down.close()
"""


def test_put_get_rename_remove_through_openssh(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    local = tmp_path / "local.bin"
    local.write_bytes(os.urandom(300_000))
    tap = tmp_path / "tap"
    tap.write_text(f"#!{sys.executable}\n{TAP}")
    tap.chmod(0o755)
    batch = tmp_path / "batch"
    batch.write_text(
        f"put {local} up.bin\nget up.bin {tmp_path / 'back.bin'}\nrename up.bin moved.bin\n"
        "mkdir d\nrmdir d\nrm moved.bin\n"
    )
    wrapper = tmp_path / "server"
    wrapper.write_text(
        f"#!/bin/sh\nexec {tap} /usr/lib/openssh/sftp-server {home} {tmp_path / 'up.log'} {tmp_path / 'down.log'}\n"
    )
    wrapper.chmod(0o755)
    subprocess.run(
        ["sftp", "-q", "-b", str(batch), "-D", str(wrapper)], check=True, timeout=30, capture_output=True
    )
    assert (tmp_path / "back.bin").read_bytes() == local.read_bytes()

    events: list[dict[str, Any]] = []
    tracker = SftpTracker(events.append)
    up, down = (tmp_path / "up.log").read_bytes(), (tmp_path / "down.log").read_bytes()
    for start in range(0, len(up), 16384):
        tracker.client_data(up[start : start + 16384])
    for start in range(0, len(down), 3000):
        tracker.server_data(down[start : start + 3000])
    tracker.close()
    root = str(home)

    def short(path: str | None) -> str | None:
        return path.replace(root, "~") if path else path

    summary = [(e["op"], short(e["path"]), short(e["target"]), e["bytes"], e["status"]) for e in events]
    assert summary == [
        ("open", "~/up.bin", None, None, "ok"),
        ("close", "~/up.bin", None, {"read": 0, "written": 300_000}, "ok"),
        ("open", "~/up.bin", None, None, "ok"),
        ("close", "~/up.bin", None, {"read": 300_000, "written": 0}, "ok"),
        ("rename", "~/up.bin", "~/moved.bin", None, "ok"),
        ("mkdir", "~/d", None, None, "ok"),
        ("rmdir", "~/d", None, None, "ok"),
        ("remove", "~/moved.bin", None, None, "ok"),
    ]
    assert events[0]["mode"] == "write|create|truncate" and events[2]["mode"] == "read"
