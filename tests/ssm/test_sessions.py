"""Client ↔ emulator for every session kind, with real processes and real TCP behind the agent."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re

import pytest

from sshgate.ssm.client import (
    CommandSession,
    ConnectToPortError,
    KmsEncryptionUnsupported,
    Output,
    PortMode,
    PortStream,
    ShellSession,
    connect,
    open_command,
    open_port,
    open_shell,
)
from sshgate.ssm.emulator import Emulator
from tests.ssm.conftest import Aws, EmulatorProcess, TcpServer

NONINTERACTIVE = "AWS-StartNonInteractiveCommand"


async def read_until(session: ShellSession, pattern: bytes, timeout: float = 10.0) -> bytes:
    seen = b""
    async with asyncio.timeout(timeout):
        while not re.search(pattern, seen):
            chunk = await session.read()
            assert chunk, f"session ended before {pattern!r}; got {seen!r}"
            seen += chunk
    return seen


async def read_all(session: ShellSession, timeout: float = 10.0) -> bytes:
    out = b""
    async with asyncio.timeout(timeout):
        while chunk := await session.read():
            out += chunk
    return out


async def test_interactive_shell_type_read_resize_exit(aws: Aws) -> None:
    shell = await open_shell(await aws.start(), control=aws.control, size=(80, 24))
    assert shell.session_type == "Standard_Stream"
    await shell.write(b"stty size; echo TERM=$TERM\n")
    seen = await read_until(shell, rb"24 80\r\n.*TERM=xterm-256color")
    assert b"stty size" in seen  # the pty echoes what we typed
    await shell.resize(132, 50)
    await shell.write(b"stty size\n")
    await read_until(shell, rb"50 132")
    await shell.write(b"echo bye; exit\n")
    assert b"bye" in await read_all(shell)
    await asyncio.wait_for(shell.wait_closed(), 5)
    assert shell.closed and shell.close_reason == ""


async def test_interactive_command_runs_through_sh_c(aws: Aws) -> None:
    target = await aws.start("AWS-StartInteractiveCommand", {"command": ["printf 'a%sb' $((6*7))"]})
    shell = await open_shell(target, control=aws.control)
    assert shell.session_type == "Standard_Stream"  # no handshake: the plugin infers a shell (§7.1)
    assert b"a42b" in await read_all(shell)


async def collect(command: CommandSession) -> tuple[bytes, bytes]:
    out: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
    async with asyncio.timeout(10):
        while (item := await command.read()) is not None:
            assert isinstance(item, Output)
            out[item.stream].append(item.data)
    return b"".join(out["stdout"]), b"".join(out["stderr"])


@pytest.mark.parametrize("code", [0, 3])
async def test_noninteractive_command_separates_stdout_stderr_and_exit_code(aws: Aws, code: int) -> None:
    script = f"sh -c 'echo to-out; echo to-err >&2; seq 1 3000 | tr -d \"\\n\"; exit {code}'"
    target = await aws.start(NONINTERACTIVE, {"command": [script], "separateOutputStream": ["true"]})
    command = await open_command(target, control=aws.control)
    assert command.session_type == "NonInteractiveCommands"
    stdout, stderr = await collect(command)
    assert stdout.startswith(b"to-out\n") and stdout.endswith(b"29993000")
    assert len(stdout) > 1024  # several ≤1024-byte chunks, reassembled in order
    assert stderr == b"to-err\n"
    assert await command.wait_exit() == code


async def test_noninteractive_stdin_is_empty_and_ctrl_c_interrupts(aws: Aws) -> None:
    """The agent gives NonInteractiveCommands no stdin (§8.1): `cat` sees EOF at once; input bytes
    only matter as control characters, 0x03 becomes SIGINT."""
    target = await aws.start(NONINTERACTIVE, {"command": ["cat"], "separateOutputStream": ["true"]})
    command = await open_command(target, control=aws.control)
    assert await collect(command) == (b"", b"")
    assert await command.wait_exit() == 0

    target = await aws.start(NONINTERACTIVE, {"command": ["sleep 30"], "separateOutputStream": ["true"]})
    command = await open_command(target, control=aws.control)
    await command.write(b"typed text is not stdin")
    await command.send_interrupt()
    await asyncio.wait_for(command.wait_closed(), 10)
    assert command.exit_code == -1  # killed by a signal, reported like Go's ExitCode()


async def test_noninteractive_without_separate_streams_merges_output(aws: Aws) -> None:
    target = await aws.start(NONINTERACTIVE, {"command": ["sh -c 'echo a; echo b >&2; exit 5'"]})
    command = await open_command(target, control=aws.control)
    stdout, stderr = await collect(command)
    assert sorted(stdout.split()) == [b"a", b"b"] and stderr == b""
    assert await command.wait_exit() is None


async def roundtrip(stream: PortStream, payload: bytes) -> bytes:
    await stream.write(payload)
    got = b""
    async with asyncio.timeout(10):
        while len(got) < len(payload):
            chunk = await stream.read(65536)
            assert chunk, "stream ended early"
            got += chunk
    return got


async def test_port_stdio_to_echo_server(aws: Aws, echo_server: TcpServer) -> None:
    target = await aws.start("AWS-StartSSHSession", {"portNumber": [str(echo_server.port)]})
    port = await open_port(target, control=aws.control)
    assert port.mode is PortMode.STDIO
    stream = await port.open_stream()
    payload = os.urandom(300_000)
    assert await roundtrip(stream, payload) == payload
    await port.close()
    assert port.closed


async def test_port_basic_mode_two_successive_connections(
    aws: Aws, emulator: Emulator, echo_server: TcpServer
) -> None:
    emulator.agent_version = "3.0.196.0"  # an agent that predates smux: basic mode on both sides
    try:
        target = await aws.start("AWS-StartPortForwardingSession", {"portNumber": [str(echo_server.port)]})
    finally:
        emulator.agent_version = "3.3.1142.0"
    port = await open_port(target, control=aws.control)
    assert port.mode is PortMode.BASIC
    first = await port.open_stream()
    assert await roundtrip(first, b"first connection") == b"first connection"
    await first.close()  # DisconnectToPort: the agent drops its TCP connection
    second = await port.open_stream()
    assert await roundtrip(second, b"second connection") == b"second connection"
    await second.close()
    assert echo_server.connections == 2
    await port.close()


async def test_port_mux_many_streams(emulator_process: EmulatorProcess, hash_server: TcpServer) -> None:
    """20 concurrent streams of 10 MB (even ones upload, odd ones download), each SHA-256 checked.

    The emulator runs as its own process here so client and agent each get a core."""
    target = await emulator_process.control.start_session(
        emulator_process.instance_id,
        "AWS-StartPortForwardingSession",
        {"portNumber": [str(hash_server.port)]},
    )
    port = await open_port(target, control=emulator_process.control)
    assert port.mode is PortMode.MUX
    size = int(os.environ.get("SSHGATE_SSM_MUX_BYTES", 10_000_000))

    async def one(index: int) -> None:
        stream = await port.open_stream()
        up = os.urandom(size) if index % 2 == 0 else b""
        await stream.write(f"{len(up)} {size - len(up)}\n".encode())
        writer = asyncio.ensure_future(stream.write(up))
        expected = 65 + (size - len(up)) + 65  # hex digest line, download, hex digest line
        buf = b""
        while len(buf) < expected:
            chunk = await stream.read(65536)
            assert chunk, f"stream {index} ended early"
            buf += chunk
        await writer
        up_digest, down, down_digest = buf[:64], buf[65:-65], buf[-65:-1]
        assert up_digest.decode() == hashlib.sha256(up).hexdigest()
        assert len(down) == size - len(up)
        assert down_digest.decode() == hashlib.sha256(down).hexdigest()
        await stream.close()

    async with asyncio.timeout(80):
        await asyncio.gather(*(one(i) for i in range(20)))
    assert hash_server.connections == 20
    await port.close()


async def test_mux_connect_to_port_error(aws: Aws, closed_port: int, echo_server: TcpServer) -> None:
    target = await aws.start("AWS-StartPortForwardingSession", {"portNumber": [str(closed_port)]})
    port = await open_port(target, control=aws.control)
    stream = await port.open_stream()
    with pytest.raises(ConnectToPortError):
        async with asyncio.timeout(10):
            await stream.read()
    assert not port.closed  # only that stream failed
    await port.close()


async def test_kms_request_fails_the_session_clearly(aws: Aws, emulator: Emulator) -> None:
    emulator.kms_key_id = "alias/session-key"
    target = await aws.start()
    with pytest.raises(KmsEncryptionUnsupported, match="KMS encryption"):
        await open_shell(target, control=aws.control)
    session = emulator.session(target.session_id)
    await asyncio.wait_for(session.ended.wait(), 5)
    assert "KMSEncryption" in (session.close_output or "")


async def test_terminate_session_api_closes_a_shell(aws: Aws, emulator: Emulator) -> None:
    target = await aws.start()
    shell = await open_shell(target, control=aws.control)
    await shell.close()
    assert emulator.session(target.session_id).status == "Terminated"
    assert target.session_id not in {s["SessionId"] for s in emulator.sessions(active_only=True)}


async def test_port_terminate_flag_ends_the_agent_session(
    aws: Aws, emulator: Emulator, echo_server: TcpServer
) -> None:
    target = await aws.start("AWS-StartPortForwardingSession", {"portNumber": [str(echo_server.port)]})
    port = await open_port(target, control=aws.control)
    await port.close()
    session = emulator.session(target.session_id)
    await asyncio.wait_for(session.ended.wait(), 5)
    assert session.close_output == "terminated by client"


async def test_shell_in_the_emulator_process_has_a_controlling_terminal(
    emulator_process: EmulatorProcess,
) -> None:
    """The command runs on uvloop: its pty shells must work there too (preexec order differs)."""
    target = await emulator_process.control.start_session(emulator_process.instance_id)
    shell = await open_shell(target, control=emulator_process.control)
    await shell.write(b"awk '{print \"tty_nr=\" $7}' /proc/self/stat; exit\n")
    out = await read_all(shell)
    match = re.search(rb"tty_nr=(\d+)", out)
    assert match is not None and int(match.group(1)) != 0, out


async def test_silent_command_outlasts_the_connect_timeout_and_gets_its_size(aws: Aws) -> None:
    """A shell-type session is usable before the agent says anything; the size and input wait."""
    target = await aws.start(
        "AWS-StartInteractiveCommand",
        {"command": ["sh -c 'sleep 1; echo start; sleep 0.5; stty size; read line; echo got $line'"]},
    )
    shell = await connect(target, control=aws.control, size=(100, 30), timeout=0.5, no_handshake=True)
    assert isinstance(shell, ShellSession)
    await shell.write(b"typed early\r")
    output = await read_all(shell)
    assert b"30 100\r\n" in output and b"got typed early" in output


async def test_reader_that_falls_behind_loses_nothing(aws: Aws) -> None:
    """A full inbox holds the agent back through TCP: refused messages would come back one per RTO,
    far too slowly for the agent's 2 s flush when the command ends, and the tail would be lost."""
    size = 24 << 20
    script = f"sh -c 'head -c {size} /dev/zero'"
    target = await aws.start(NONINTERACTIVE, {"command": [script], "separateOutputStream": ["true"]})
    command = await open_command(target, control=aws.control)
    await asyncio.sleep(3)
    stdout, _ = await collect(command)
    assert len(stdout) == size
    assert await command.wait_exit() == 0
