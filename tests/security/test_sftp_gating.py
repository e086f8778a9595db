"""Attacks on sftp gating (docs/policy.md): every request that can change something is asked of the
request rule with an absolute, normalised path, whatever road it takes (``chmod -h``, hard
links, renames, relative or ``..`` paths, unknown extended requests, sftp-server over exec), and
a blocked one is answered with SSH_FX_PERMISSION_DENIED and never reaches the sshd."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from sshgate.sftp import protocol as p
from tests.conftest import Keys
from tests.security.conftest import PATH_ONLY_PREFIX, recording
from tests.sftp import packets as k
from tests.support.gateway import Client, GatewayProcess

SFTP_SERVER = "/usr/lib/openssh/sftp-server"
HOME = Path("/home/sgtest")


@pytest.fixture
def alice(guarded: GatewayProcess, keys: Keys, tmp_path: Path) -> Client:
    return Client(guarded, keys.alice, tmp_path / "alice")


def _sftp(client: Client, batch: str, *options: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["sftp", "-F", str(client.config), "-o", "User=alice+web-1", *options, "-b", "-", "gw"],
        input=batch.encode(),
        capture_output=True,
        timeout=60,
    )


def _untouched(protected: Path) -> None:
    file = protected / "file"
    assert file.read_text() == "original\n"
    assert file.stat().st_mode & 0o7777 == 0o644
    assert file.stat().st_nlink == 1
    assert sorted(x.name for x in protected.iterdir()) == ["file"]


def _sftp_events(gw: GatewayProcess, session_id: str) -> list[dict[str, Any]]:
    doc = recording(gw, session_id)
    [channel] = [c for c in doc["channels"] if c["kind"] == "sftp"]
    return [json.loads(line) for line in (Path(doc["dir"]) / channel["files"][0]).read_text().splitlines()]


def _blocked(gw: GatewayProcess, session_id: str) -> list[tuple[str, str, str | None]]:
    """(op, path, target) of the requests the gateway refused in that session's recording."""
    return [
        (e["op"], e["path"], e["target"])
        for e in _sftp_events(gw, session_id)
        if e.get("status") == "blocked"
    ]


def _session(gw: GatewayProcess, before: int) -> str:
    started = gw.events("session.start", resource="web-1")
    assert len(started) > before, "no session started"
    return str(started[-1]["session_id"])


def test_stock_sftp_cannot_change_a_protected_file(
    guarded: GatewayProcess, alice: Client, protected: Path, tmp_path: Path
) -> None:
    """chmod -h (lsetstat@openssh.com), hard and symbolic links (hardlink@openssh.com), rename
    (posix-rename@openssh.com) and a ``..`` path are all refused; reading still works."""
    file = protected / "file"
    elsewhere = HOME / f"sg-open-{uuid.uuid4().hex[:8]}"
    detour = f"/tmp/..{HOME}/./{protected.name}//file"
    batch = "\n".join(
        [
            f"get {file} {tmp_path}/copy",
            f"-chmod -h 600 {file}",
            f"-chmod 600 {file}",
            f"-ln {file} {elsewhere}",
            f"-ln -s {file} {elsewhere}",
            f"-rename {file} {elsewhere}",
            f"-rm {detour}",
            f"-put {tmp_path}/copy {protected}/new",
            "",
        ]
    )
    before = len(guarded.events("session.start", resource="web-1"))
    try:
        result = _sftp(alice, batch)
        session = _session(guarded, before)
        assert (tmp_path / "copy").read_text() == "original\n"
        assert result.stderr.count(b"Permission denied") >= 6, result.stderr
        _untouched(protected)
        assert not elsewhere.exists() and not elsewhere.is_symlink()
        blocked = _blocked(guarded, session)
        assert blocked == [
            ("lsetstat", str(file), None),
            ("setstat", str(file), None),
            ("link", str(elsewhere), str(file)),
            ("symlink", str(elsewhere), str(file)),
            ("rename", str(file), str(elsewhere)),
            ("remove", str(file), None),
            ("open", f"{protected}/new", None),
        ]
        events = guarded.events("request.blocked", session_id=session)
        assert {(e["operation"], e["path"]) for e in events} >= {
            ("setstat", str(file)),
            ("remove", str(file)),
        }
        assert all(e["message"].endswith(" is protected") for e in events)
    finally:
        elsewhere.unlink(missing_ok=True)


def test_sftp_server_over_exec_is_gated_and_recorded(
    guarded: GatewayProcess, alice: Client, protected: Path, tmp_path: Path
) -> None:
    """``sftp -s /usr/lib/openssh/sftp-server`` opens an exec channel, not the subsystem."""
    (tmp_path / "up").write_text("uploaded\n")
    allowed = HOME / f"sg-open-{uuid.uuid4().hex[:8]}"
    before = len(guarded.events("session.start", resource="web-1"))
    try:
        result = _sftp(alice, f"-rm {protected}/file\nput {tmp_path}/up {allowed}\n", "-s", SFTP_SERVER)
        assert result.returncode == 0, result.stderr
        assert b"Permission denied" in result.stderr
        _untouched(protected)
        assert allowed.read_text() == "uploaded\n"
        session = _session(guarded, before)
        asked = guarded.wait_event("policy.decision", stage="request", kind="subsystem", session_id=session)
        assert (asked["subsystem"], asked["command"]) == ("sftp", SFTP_SERVER)
        events = _sftp_events(guarded, session)
        assert [(e["op"], e["path"], e["status"]) for e in events if e["op"] in ("remove", "open")] == [
            ("remove", f"{protected}/file", "blocked"),
            ("open", str(allowed), "ok"),
        ]
    finally:
        allowed.unlink(missing_ok=True)


def test_sftp_server_lookalike_is_an_exec_command(
    guarded: GatewayProcess, keys: Keys, protected: Path, tmp_path: Path
) -> None:
    """A shell line that starts with sftp-server but does more stays an exec command: auditors,
    who may not run commands, cannot pass one off as sftp."""
    audrey = Client(guarded, keys.stranger, tmp_path / "audrey")
    marker = Path(f"/tmp/sg-lookalike-{uuid.uuid4().hex[:8]}")
    command = f"{SFTP_SERVER} ; touch {marker}"
    result = subprocess.run(
        [
            "sftp",
            "-F",
            str(audrey.config),
            "-o",
            "User=idp:human:audrey@corp.com+web-1",
            "-s",
            command,
            "-b",
            "-",
            "gw",
        ],
        input=b"ls\n",
        capture_output=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert not marker.exists()
    event = guarded.wait_event("request.blocked", kind="exec", command=command)
    assert event["message"] == "auditors may not run commands"


class RawSftp:
    """An sftp client that sends exactly the packets a test writes (asyncssh carries them)."""

    def __init__(self, stdin: asyncssh.SSHWriter[bytes], stdout: asyncssh.SSHReader[bytes]) -> None:
        self.stdin, self.stdout = stdin, stdout

    async def call(self, packet: bytes) -> p.Reply:
        self.stdin.write(packet)
        return await self.reply()

    async def reply(self) -> p.Reply:
        length, ptype = struct.unpack(">IB", await self.stdout.readexactly(5))
        return p.parse_reply(ptype, await self.stdout.readexactly(length - 1))

    async def burst(self, *packets: bytes) -> list[p.Reply]:
        """Send ``packets`` in one write; their replies in the order they came."""
        self.stdin.write(b"".join(packets))
        return [await self.reply() for _ in packets]


@asynccontextmanager
async def raw_sftp(gw: GatewayProcess, keys: Keys) -> AsyncIterator[RawSftp]:
    host_key = asyncssh.import_public_key(gw.host_pub())
    async with asyncssh.connect(
        "127.0.0.1",
        gw.port,
        username="alice+web-1",
        client_keys=[str(keys.alice)],
        known_hosts=([host_key], [], []),
        agent_path=None,
        config=None,
    ) as conn:
        stdin, stdout, _ = await conn.open_session(subsystem="sftp", encoding=None)
        client = RawSftp(stdin, stdout)
        version = await client.call(k.init())
        assert (version.type, version.version) == (p.VERSION, 3)
        yield client


def _denied(reply: p.Reply, rid: int) -> str:
    assert (reply.type, reply.id, reply.code) == (p.STATUS, rid, p.FX_PERMISSION_DENIED), reply
    return reply.message


async def test_relative_paths_are_resolved_from_the_servers_directory(
    guarded: GatewayProcess, keys: Keys, protected: Path
) -> None:
    """The sshd's sftp-server starts in the home directory: ``sg-protected-x/file`` is the
    protected file, and the policy sees it by its absolute path."""
    async with raw_sftp(guarded, keys) as sftp:
        message = _denied(await sftp.call(k.path_op(p.REMOVE, 7, f"{protected.name}/file")), 7)
        assert message == f"Blocked by policy: {protected}/file is protected"
        message = _denied(
            await sftp.call(k.path_op(p.RENAME, 8, "x", f"./{protected.name}/../{protected.name}/y")), 8
        )
        assert message == f"Blocked by policy: {protected}/y is protected"
        # the session goes on: a harmless request still reaches the sshd
        reply = await sftp.call(k.path_op(p.STAT, 9, f"{protected.name}/file"))
        assert (reply.type, reply.id) == (p.ATTRS, 9)
    _untouched(protected)
    guarded.wait_event("request.blocked", kind="sftp", operation="remove", path=f"{protected}/file")


async def test_unknown_requests_never_reach_the_sshd(
    guarded: GatewayProcess, keys: Keys, protected: Path
) -> None:
    """OpenSSH's sftp-server answers what it does not know with OP_UNSUPPORTED (8); these come
    back PERMISSION_DENIED (3) from the gateway, so they never got there."""
    async with raw_sftp(guarded, keys) as sftp:
        message = _denied(
            await sftp.call(k.extended(3, "copy-file@example.com", f"{protected}/file", "/tmp/x")), 3
        )
        assert message == "Blocked by policy: sftp extended:copy-file@example.com is not allowed"
        message = _denied(await sftp.call(k.packet(99, k.u32(4), k.s("/tmp"))), 4)
        assert message == "sftp request type 99 is not supported by the gateway"
        # lsetstat sent by hand, with the OpenSSH attribute layout (permissions only)
        lsetstat = k.packet(
            p.EXTENDED,
            k.u32(5),
            k.s("lsetstat@openssh.com"),
            k.s(f"{protected}/file"),
            k.u32(4),
            k.u32(0o600),
        )
        assert _denied(await sftp.call(lsetstat), 5) == f"Blocked by policy: {protected}/file is protected"
        # a server that reads the path as a C string stops at the NUL (the protected file), while
        # the text after it would normalise to an open path: refused without asking
        nul = k.path_op(p.REMOVE, 6, f"{protected}/file\0/../../../../../tmp/ok")
        assert _denied(await sftp.call(nul), 6) == "a path with a NUL byte is refused"
        # a known query still passes
        reply = await sftp.call(k.extended(7, "statvfs@openssh.com", "/tmp"))
        assert (reply.type, reply.id) == (p.EXTENDED_REPLY, 7)
    _untouched(protected)
    guarded.wait_event("request.blocked", kind="sftp", operation="extended:copy-file@example.com")
    guarded.wait_event("request.blocked", kind="sftp", operation="type-99")


@pytest.mark.parametrize("gw_name", ["guarded", "gateway"])
async def test_a_stream_that_cannot_be_followed_ends_the_channel(
    gw_name: str, keys: Keys, request: pytest.FixtureRequest
) -> None:
    """Gated (``guarded``: a request rule) or only recorded (``gateway``: no policies): bytes the
    gateway cannot frame end the channel, and neither they nor what follows reach the sshd
    unrecorded."""
    gw: GatewayProcess = request.getfixturevalue(gw_name)
    before = len(gw.events("channel.error"))
    victim = Path(f"/tmp/sg-victim-{uuid.uuid4().hex[:8]}")
    victim.write_text("kept\n")
    shutil.chown(victim, "sgtest")
    try:
        async with raw_sftp(gw, keys) as sftp:
            sftp.stdin.write(
                struct.pack(">IB", p.MAX_PACKET + 1, p.WRITE) + k.path_op(p.REMOVE, 2, str(victim))
            )
            assert await sftp.stdout.read() == b""  # EOF: no answer, the channel closed
        assert victim.read_text() == "kept\n"
    finally:
        victim.unlink(missing_ok=True)
    deadline = time.monotonic() + 10
    while len(gw.events("channel.error")) == before and time.monotonic() < deadline:
        time.sleep(0.05)  # the audit line may land just after the client saw the channel close
    [event] = gw.events("channel.error")[before:]
    assert event["kind"] == "sftp" and "packet length" in event["reason"]


def _chmod(rid: int, handle: bytes, mode: int) -> bytes:
    """FSETSTAT with permissions only (SSH_FILEXFER_ATTR_PERMISSIONS)."""
    return k.packet(p.FSETSTAT, k.u32(rid), k.s(handle), k.u32(4), k.u32(mode))


async def test_a_closed_handle_reused_by_the_server_is_not_trusted(
    guarded: GatewayProcess, keys: Keys, protected: Path
) -> None:
    """sftp-server gives the handle freed by CLOSE to the next OPEN. Sent in one burst, CLOSE(h),
    OPEN(protected file, read only) and FSETSTAT(h) would chmod the protected file while the
    policy was asked about the harmless one: the FSETSTAT is refused, and once the OPEN's answer
    is in, the same handle is judged as the protected file."""
    file = protected / "file"
    harmless = Path(f"/tmp/sg-harmless-{uuid.uuid4().hex[:8]}")
    harmless.write_text("x")
    shutil.chown(harmless, "sgtest")
    try:
        async with raw_sftp(guarded, keys) as sftp:
            h0 = (await sftp.call(k.open_(1, str(harmless), p.FXF_READ))).handle
            assert h0 is not None
            replies = {r.id: r for r in await sftp.burst(
                k.close(2, h0), k.open_(3, str(file), p.FXF_READ), _chmod(4, h0, 0o4777)
            )}  # fmt: skip
            assert replies[2].code == p.FX_OK
            assert replies[3].handle == h0  # the server did reuse it: the attack was on
            assert _denied(replies[4], 4) == "the handle is not open, or is closing"
            message = _denied(await sftp.call(_chmod(5, h0, 0o4777)), 5)
            assert message == f"Blocked by policy: {file} is protected"
        _untouched(protected)
        guarded.wait_event("request.blocked", kind="sftp", operation="fsetstat",
                           reason="the handle is not open, or is closing")  # fmt: skip
    finally:
        harmless.unlink()


async def test_a_request_id_already_outstanding_is_refused(
    guarded: GatewayProcess, keys: Keys, protected: Path
) -> None:
    """OPEN(protected file) and OPENDIR(/tmp) with one id: the server's HANDLE for the file must
    not be taken for the directory's, or an FSETSTAT on it would be judged as ``/tmp``."""
    file = protected / "file"
    async with raw_sftp(guarded, keys) as sftp:
        replies = await sftp.burst(k.open_(7, str(file), p.FXF_READ), k.path_op(p.OPENDIR, 7, "/tmp"))
        [opened] = [r for r in replies if r.type == p.HANDLE]
        [refused] = [r for r in replies if r.type == p.STATUS]
        assert _denied(refused, 7) == "request id 7 is already outstanding"
        assert opened.handle is not None
        message = _denied(await sftp.call(_chmod(8, opened.handle, 0o6777)), 8)
        assert message == f"Blocked by policy: {file} is protected"
    _untouched(protected)
    guarded.wait_event("request.blocked", kind="sftp", operation="opendir",
                       reason="request id 7 is already outstanding")  # fmt: skip


async def test_a_hard_link_is_judged_by_its_new_name(guarded: GatewayProcess, keys: Keys) -> None:
    """docs/policy.md: for a link, ``path`` is the new link. A rule that checks ``path`` only
    refuses a hard link made into its directory from a file elsewhere."""
    guarded_dir = Path(f"{PATH_ONLY_PREFIX}{uuid.uuid4().hex[:8]}")
    source = HOME / f"sg-open-{uuid.uuid4().hex[:8]}"
    guarded_dir.mkdir()
    source.write_text("attacker content\n")
    for path in (guarded_dir, source):
        shutil.chown(path, "sgtest", "sgtest")
    try:
        async with raw_sftp(guarded, keys) as sftp:
            hardlink = k.extended(3, "hardlink@openssh.com", str(source), f"{guarded_dir}/link")
            message = _denied(await sftp.call(hardlink), 3)
            assert message == f"Blocked by policy: writes under {guarded_dir}/link need ops"
        assert list(guarded_dir.iterdir()) == []
        event = guarded.wait_event(
            "request.blocked", kind="sftp", operation="write", path=f"{guarded_dir}/link"
        )
        assert event["target_path"] == str(source)
    finally:
        shutil.rmtree(guarded_dir, ignore_errors=True)
        source.unlink()
