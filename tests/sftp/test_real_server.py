"""The tracker against OpenSSH's own sftp client and sftp-server, with a tap between them."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

from sshgate.sftp.tracker import SftpTracker

# Logs both directions in one file, in the order it passed them on (u: to the server, d: to the
# client), so the replay is causal: a request comes after the reply it learned a handle from.
TAP = """
import os, selectors, struct, subprocess, sys
server = subprocess.Popen([sys.argv[1], "-d", sys.argv[2]], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
log = open(sys.argv[3], "wb")
sel = selectors.DefaultSelector()
sel.register(0, selectors.EVENT_READ, (server.stdin.fileno(), b"u"))
sel.register(server.stdout.fileno(), selectors.EVENT_READ, (1, b"d"))
while sel.get_map():
    for key, _ in sel.select(10):
        target, way = key.data
        data = os.read(key.fd, 65536)
        if not data:
            sel.unregister(key.fd)
            os.close(target)
            continue
        log.write(way + struct.pack(">I", len(data)) + data)
        os.write(target, data)
log.close()
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
    wrapper.write_text(f"#!/bin/sh\nexec {tap} /usr/lib/openssh/sftp-server {home} {tmp_path / 'tap.log'}\n")
    wrapper.chmod(0o755)
    subprocess.run(
        ["sftp", "-q", "-b", str(batch), "-D", str(wrapper)], check=True, timeout=30, capture_output=True
    )
    assert (tmp_path / "back.bin").read_bytes() == local.read_bytes()

    events: list[dict[str, Any]] = []
    tracker = SftpTracker(events.append)
    log, pos = (tmp_path / "tap.log").read_bytes(), 0
    while pos < len(log):
        (size,) = struct.unpack_from(">I", log, pos + 1)
        feed = tracker.client_data if log[pos : pos + 1] == b"u" else tracker.server_data
        data = log[pos + 5 : pos + 5 + size]
        for start in range(0, size, 3000):
            feed(data[start : start + 3000])
        pos += 5 + size
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
