"""scp (both protocols, both directions), sftp and rsync through the gateway to a real sshd."""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

import pytest

from tests.support.gateway import Client

LOGIN = "alice+web-1"


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-protocol", "scp-protocol"])
def test_scp_both_directions(alice: Client, remote_dir: Path, tmp_path: Path, legacy: bool) -> None:
    local = tmp_path / "up.bin"
    local.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    up = alice.scp(LOGIN, str(local), f"gw:{remote_dir}/up.bin", legacy=legacy)
    assert up.returncode == 0, up.stderr
    assert (remote_dir / "up.bin").read_bytes() == local.read_bytes()
    down = alice.scp(LOGIN, f"gw:{remote_dir}/up.bin", str(tmp_path / "down.bin"), legacy=legacy)
    assert down.returncode == 0, down.stderr
    assert (tmp_path / "down.bin").read_bytes() == local.read_bytes()


def test_sftp_batch(alice: Client, remote_dir: Path, tmp_path: Path) -> None:
    local = tmp_path / "a.txt"
    local.write_bytes(b"hello sftp\n" * 1000)
    batch = f"""cd {remote_dir}
put {local} a.txt
rename a.txt b.txt
ls -1
get b.txt {tmp_path}/b.txt
rm b.txt
ls -1
"""
    result = alice.sftp(LOGIN, batch)
    assert result.returncode == 0, result.stderr
    listing = result.stdout.decode()
    assert "b.txt" in listing
    assert (tmp_path / "b.txt").read_bytes() == local.read_bytes()
    assert not any(remote_dir.iterdir())


def _tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "top.txt").write_text("top\n")
    (root / "sub" / "data.bin").write_bytes(os.urandom(200_000))
    (root / "sub" / "deeper" / "x.sh").write_text("#!/bin/sh\necho x\n")
    (root / "sub" / "deeper" / "x.sh").chmod(0o755)


def test_rsync_tree_both_directions(alice: Client, remote_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src)
    up = alice.rsync(LOGIN, "-a", f"{src}/", f"gw:{remote_dir}/tree/")
    assert up.returncode == 0, up.stderr
    assert not filecmp.dircmp(src, remote_dir / "tree").diff_files
    assert os.access(remote_dir / "tree" / "sub" / "deeper" / "x.sh", os.X_OK)
    back = tmp_path / "back"
    down = alice.rsync(LOGIN, "-a", f"gw:{remote_dir}/tree/", f"{back}/")
    assert down.returncode == 0, down.stderr
    for rel in ("top.txt", "sub/data.bin", "sub/deeper/x.sh"):
        assert (back / rel).read_bytes() == (src / rel).read_bytes()
