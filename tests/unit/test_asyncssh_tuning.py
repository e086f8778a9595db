"""The keyed GCM cipher must produce exactly asyncssh's bytes, packet after packet; the fixes apply
only when the gateway starts, and only on the asyncssh code they were tested against."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import asyncssh
from asyncssh.crypto import GCMCipher
from packaging.requirements import Requirement
from packaging.version import Version

from sshgate.asyncssh_checks import RELIED_ON as CHECKS_RELY_ON
from sshgate.asyncssh_checks import WRAPPED
from sshgate.asyncssh_tuning import RELIED_ON, REPLACED, TESTED_ASYNCSSH
from sshgate.ssh_packet_path import KeyedGCMCipher


def test_same_bytes_as_asyncssh_and_round_trip() -> None:
    key, iv = os.urandom(16), os.urandom(8) + b"\xff\xff\xff\xfe"  # the counter wraps within the test
    ours, theirs = KeyedGCMCipher("aes128-gcm@openssh.com", key, iv), GCMCipher("aes128-gcm", key, iv)
    opener = KeyedGCMCipher("aes128-gcm", key, iv)
    for size in (16, 32, 1024, 32768, 48):
        header, body = os.urandom(4), os.urandom(size)
        packet, mac = ours.encrypt_and_sign(header, body)
        assert mac == b""  # the tag comes with the packet, as send_packet would append it
        assert packet == b"".join(theirs.encrypt_and_sign(header, body))
        assert opener.verify_and_decrypt(header, packet[4:-16], packet[-16:]) == body


def test_tampered_packet_is_rejected_and_counter_still_advances() -> None:
    key, iv = os.urandom(32), os.urandom(12)
    sender, receiver = KeyedGCMCipher("aes256-gcm@openssh.com", key, iv), KeyedGCMCipher("x", key, iv)
    first, _ = sender.encrypt_and_sign(b"hdr1", b"a" * 32)
    second, _ = sender.encrypt_and_sign(b"hdr2", b"b" * 32)
    assert receiver.verify_and_decrypt(b"hdr1", first[4:-16], bytes(16)) is None
    assert receiver.verify_and_decrypt(b"hdr2", second[4:-16], second[-16:]) == b"b" * 32


def test_recv_buffer_behaves_like_bytes() -> None:
    from sshgate.ssh_packet_path import RecvBuffer

    model = b""
    buf = RecvBuffer(bytearray())
    for chunk in (b"SSH-2.0-x\r\nabc", b"defghij", b"", b"klmnop" * 100):
        model += chunk
        buf += chunk
        assert len(buf) == len(model) and bool(buf) == bool(model)
        assert buf.find(b"\n", 0, 256) == model.find(b"\n", 0, 256)
        assert buf[:5] == model[:5] and buf[3:9] == model[3:9]
        model, buf = model[4:], buf[4:]
        assert buf[: len(model)] == model
    model, buf = model[len(model) :], buf[len(model) :]
    assert not buf and len(buf) == 0


def test_only_a_connections_first_reads_acknowledge_at_once() -> None:
    import socket

    from sshgate.asyncssh_tuning import _QUICKACK_READS, _data_received

    calls: list[tuple[int, int, int]] = []

    class Sock:
        family = socket.AF_INET

        def setsockopt(self, level: int, option: int, value: int) -> None:
            calls.append((level, option, value))

    class Transport:
        def get_extra_info(self, name: str) -> object:
            return Sock() if name == "socket" else None

    class Conn:
        _inpbuf = b""
        _transport = Transport()
        received = 0

        def _recv_data(self) -> None:
            self.received = len(self._inpbuf)

    conn = Conn()
    for _ in range(_QUICKACK_READS + 10):
        _data_received(conn, b"x")
    assert conn.received == _QUICKACK_READS + 10
    assert calls == [(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)] * _QUICKACK_READS


def test_writes_a_read_causes_leave_together_per_transport_and_others_at_once() -> None:
    from sshgate.asyncssh_tuning import _collecting_send, _data_received

    class Transport:
        def __init__(self) -> None:
            self.calls: list[list[bytes]] = []

        def get_extra_info(self, name: str) -> object:
            return None

        def write(self, data: bytes) -> None:
            self.calls.append([data])

        def writelines(self, chunks: list[bytes]) -> None:
            self.calls.append(list(chunks))

    class Conn:
        _sshgate_batch = None

        def __init__(self, peer: Conn | None = None) -> None:
            self._inpbuf = b""
            self._transport = Transport()
            self.peer = peer

        def _recv_data(self) -> None:  # a read that answers its own peer and relays to another
            _collecting_send(self, b"own-1")
            if self.peer is not None:
                _collecting_send(self.peer, b"relayed-1")
                _collecting_send(self.peer, b"relayed-2")
            _collecting_send(self, b"own-2")

    other = Conn()
    conn = Conn(peer=other)
    _data_received(conn, b"x")
    assert conn._transport.calls == [[b"own-1", b"own-2"]]
    assert other._transport.calls == [[b"relayed-1", b"relayed-2"]]
    _collecting_send(other, b"from-a-timer")  # outside a read: written at once
    assert other._transport.calls[-1] == [b"from-a-timer"]


# sha256 (first 16 hex digits) of inspect.getsource of each asyncssh object asyncssh_tuning replaces or
# relies on, or asyncssh_checks wraps or relies on, per tested version. A new asyncssh fails here: read what changed
# in these (2.24.0 -> 2.24.1 changed _recv_pkthdr, for one), re-run bench/bench_relay.py and
# tests/security/test_flow_control.py, then add the version and its prints.
FINGERPRINTS = {
    "2.24.1": {
        "asyncssh.encryption:GCMCipher": "e389d2b5bed8eb41",
        "asyncssh.encryption:ChachaCipher": "e678065d67f48c01",
        "asyncssh.connection:SSHConnection.send_packet": "fb9da7bec6dd395a",
        "asyncssh.connection:SSHConnection._send": "c6698a37eb80f574",
        "asyncssh.connection:SSHConnection.data_received": "b2d14a83b2604db6",
        "asyncssh.connection:SSHConnection._recv_pkthdr": "7adc4d88fe20593c",
        "asyncssh.channel:SSHChannel.send_packet": "00e81b763c8f3dd2",
        "asyncssh.encryption:GCMEncryption": "d255f9e6b1fa73ee",
        "asyncssh.encryption:ChachaEncryption": "5902581e97e59135",
        "asyncssh.connection:SSHConnection._recv_data": "fc4e0735191bb0fd",
        "asyncssh.connection:SSHConnection._recv_version": "05573b0ac8886bf3",
        "asyncssh.connection:SSHConnection._recv_packet": "b3daa22e9763eee9",
        "asyncssh.connection:SSHConnection._finish_recv_packet": "e12d96db58b3524e",
        "asyncssh.connection:SSHConnection._send_kexinit": "275ddc818b59f44b",
        "asyncssh.channel:SSHChannel._flush_send_buf": "3f11e9dc27c58b18",
        "asyncssh.channel:SSHChannel._process_data": "342490795c4b893c",
        "asyncssh.channel:SSHChannel._process_extended_data": "e4e69e0e1f37e977",
        "asyncssh.channel:SSHChannel._accept_data": "33121e9e185c9850",
        "asyncssh.packet:SSHPacketHandler.process_packet": "490a59d971d0ce03",
        "asyncssh.packet:SSHPacketLogger._log_packet": "f3263d7da93663f1",
        "asyncssh.logging:SSHLogger.packet": "a4baf6329fa97dcf",
        "asyncssh.logging:SSHLogger.debug2": "7f086ecd89814cd1",
        "asyncssh.channel:SSHChannel._process_window_adjust": "7a2e4c4998e0b496",
        "asyncssh.channel:SSHServerChannel._process_env_request": "c6847fe6051100fa",
        "asyncssh.channel:SSHServerChannel._process_x11_req_request": "9b3c4d8658c40f2d",
        "asyncssh.channel:SSHServerChannel._start_session": "4ef1112382d829bb",
    }
}


def resolve(name: str) -> object:
    module, _, qualname = name.partition(":")
    obj: object = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def fingerprint(name: str) -> str:
    return hashlib.sha256(inspect.getsource(resolve(name)).encode()).hexdigest()[:16]  # type: ignore[arg-type]


def test_asyncssh_is_a_tested_version_with_the_tested_code() -> None:
    assert set(FINGERPRINTS) == set(TESTED_ASYNCSSH)
    version = asyncssh.__version__
    assert version in FINGERPRINTS, f"asyncssh {version} was never tested with sshgate.asyncssh_tuning"
    assert set(FINGERPRINTS[version]) == set(REPLACED + RELIED_ON + WRAPPED + CHECKS_RELY_ON)
    changed = sorted(n for n, fp in FINGERPRINTS[version].items() if fingerprint(n) != fp)
    assert not changed, f"asyncssh {version} differs from the tested code in {changed}"


def test_the_dependency_admits_exactly_the_tested_versions() -> None:
    with (Path(__file__).parents[2] / "pyproject.toml").open("rb") as f:
        dependencies = map(Requirement, tomllib.load(f)["project"]["dependencies"])
    spec = next(r.specifier for r in dependencies if r.name == "asyncssh")
    tested = sorted(Version(v) for v in TESTED_ASYNCSSH)
    assert all(spec.contains(v) for v in tested)
    low, high = tested[0], tested[-1]
    neighbours = [f"{high.major}.{high.minor}.{high.micro + 1}", f"{high.major}.{high.minor + 1}.0",
                  f"{high.major + 1}.0.0", f"{low.major}.{low.minor - 1}.0"]  # fmt: skip
    if low.micro:
        neighbours.append(f"{low.major}.{low.minor}.{low.micro - 1}")
    assert not any(spec.contains(v) for v in neighbours), spec


def run_python(script: str) -> list[str]:
    """Lines a fresh interpreter prints: patches to asyncssh stay out of the test process."""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


SNAPSHOT = """
import json
import asyncssh.channel, asyncssh.connection, asyncssh.encryption
def snapshot():
    return {**{f"asyncssh.encryption:{k}": v for k, v in vars(asyncssh.encryption).items()},
            **{f"asyncssh.connection:SSHConnection.{k}": v
               for k, v in vars(asyncssh.connection.SSHConnection).items()},
            **{f"asyncssh.channel:SSHChannel.{k}": v
               for k, v in vars(asyncssh.channel.SSHChannel).items()}}
before = snapshot()
"""
CHANGED = "sorted(k for k, v in snapshot().items() if before.get(k, before) is not v)"


def test_importing_the_gateway_changes_nothing_and_serve_applies_exactly_the_replacements() -> None:
    lines = run_python(
        SNAPSHOT
        + "import sshgate.cli, sshgate.demo, sshgate.gateway.server\n"
        + f"print(json.dumps({CHANGED}))\n"
        + "from sshgate import asyncssh_tuning\n"
        + f"print(json.dumps([asyncssh_tuning.apply(), {CHANGED}]))\n"
    )
    assert json.loads(lines[0]) == []
    applied, changed = json.loads(lines[1])
    assert applied is True
    assert set(changed) == {*REPLACED, "asyncssh.connection:SSHConnection._sshgate_batch"}


def test_an_untested_asyncssh_runs_unpatched_with_one_warning() -> None:
    lines = run_python(
        SNAPSHOT
        + "asyncssh.__version__ = '2.99.0'\n"
        + "from sshgate import asyncssh_tuning, audit\n"
        + "audit.configure()\n"
        + f"print(json.dumps([asyncssh_tuning.apply(), asyncssh_tuning.apply(), {CHANGED}]))\n"
    )
    warning, result = lines
    assert json.loads(warning) | {"timestamp": "", "pid": 0} == {
        "event": "asyncssh.untuned",
        "version": "2.99.0",
        "tested": list(TESTED_ASYNCSSH),
        "level": "warning",
        "timestamp": "",
        "pid": 0,
    }
    assert json.loads(result) == [False, False, []]


IGNORES = """
import asyncio, json, sys
import asyncssh
from asyncssh.connection import SSHConnection
from sshgate import asyncssh_tuning
asyncssh_tuning.apply()
ignored = []
logged = SSHConnection.log_received_packet
def count(self, pkttype, *args, **kwargs):
    if pkttype == 2 and not self.is_client():  # SSH_MSG_IGNORE, at the server
        ignored.append(1)
    logged(self, pkttype, *args, **kwargs)
SSHConnection.log_received_packet = count
class Server(asyncssh.SSHServer):
    def begin_auth(self, username):
        return False
async def main(cipher):
    got = bytearray()
    async def handle(process):
        while data := await process.stdin.read(65536):
            got.extend(data)
        process.exit(0)
    server = await asyncssh.listen("127.0.0.1", 0, server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
                                   server_factory=Server, process_factory=handle, encoding=None)
    port = server.sockets[0].getsockname()[1]
    async with asyncssh.connect("127.0.0.1", port, known_hosts=None, encryption_algs=[cipher],
                                compression_algs=None, agent_path=None, config=None, username="x") as conn:
        before = len(ignored)
        proc = await conn.create_process(encoding=None)
        sent = bytes(range(256)) * 64 * 20
        for n in range(20):
            proc.stdin.write(sent[n * 16384 : (n + 1) * 16384])
            await proc.stdin.drain()
        proc.stdin.write_eof()
        await proc.wait()
    server.close()
    return got == sent, len(ignored) - before
print(json.dumps({c: asyncio.run(main(c)) for c in sys.argv[1:]}))
"""


def test_ignore_packets_only_under_a_cipher_without_its_own_nonce() -> None:
    """RFC 4251 §9.3.1's IGNORE before each packet guards CBC's predictable IV: under AEAD ciphers
    the patched sender leaves it out (the peer reads every byte), under others it still sends it."""
    ciphers = ["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes128-ctr"]
    done = subprocess.run(
        [sys.executable, "-c", IGNORES, *ciphers], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert all(intact for intact, _ in result.values()), result
    assert result["aes128-gcm@openssh.com"][1] == 0 and result["chacha20-poly1305@openssh.com"][1] == 0
    assert result["aes128-ctr"][1] >= 20  # one per packet the client sent (20 writes and more)
