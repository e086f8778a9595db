"""The emulated agent's session plugins: they run real processes and real TCP connections here.

* ``PtyPlugin`` -- Standard_Stream / InteractiveCommands: ``sh`` (or the command, exec'd directly
  in ECS container mode, else through ``sh -c``) on a pseudo-terminal; Size messages resize it.
* ``CommandPlugin`` -- NonInteractiveCommands: the shell-split command without stdin (the agent
  gives it none; input bytes 0x03 / 0x1C become SIGINT / SIGQUIT), stdout as Output, stderr as
  StdErr and a final ``EXIT_CODE: n`` when ``separateOutputStream`` is set, else one merged stream.
* ``BasicPortPlugin`` -- stdio and basic port modes: one TCP connection to the destination,
  re-dialled on the next data after DisconnectToPort or (basic mode) a destination EOF.
* ``MuxPortPlugin`` -- an smux v1 server; one TCP dial per client stream, ConnectToPortError on failure.

Output is read in chunks of at most 1024 bytes; shell output is cut on UTF-8 boundaries like the agent.
Destinations must be loopback addresses: the emulator never reaches beyond this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import ipaddress
import os
import shlex
import signal
import struct
import subprocess
import termios
from collections.abc import Awaitable, Callable
from typing import Any

from sshgate.ssm.codec import (
    ClientMessage,
    CodecError,
    PayloadType,
    PortFlag,
    SizeData,
    exit_code_payload,
    flag_payload,
    parse_flag,
)
from sshgate.ssm.emulator.documents import shell_property
from sshgate.ssm.reliable import CHUNK_SIZE, DataChannel, Inbox
from sshgate.ssm.smux import SmuxSession, SmuxStream

INBOX_LIMIT = 4 * 1024 * 1024
READ_AHEAD = 64 * 1024
CONTROL_SIGNALS = {0x03: signal.SIGINT, 0x1C: signal.SIGQUIT}
ERROR_EXIT_CODE = 1
REPLACEMENT = "\ufffd"
REPLACEMENT_BYTES = REPLACEMENT.encode()


class SessionFailure(Exception):
    """The plugin could not run; the text becomes channel_closed's Output."""


def split_utf8(data: bytes) -> tuple[bytes, bytes]:
    """What the agent's ``processStdoutData`` sends of ``data``, and what it keeps for the next read.

    Go decodes rune by rune: a valid rune goes out whole; a RuneError goes out as its first byte
    alone, or is kept with everything after it when it lies in the last 3 bytes (it may be an
    incomplete rune). Go reports the valid encoding of U+FFFD as RuneError too, so EF BF BD
    leaves as EF: an agent bug, reproduced.
    """
    if data.isascii():
        return data, b""
    try:
        if REPLACEMENT not in data.decode():
            return data, b""
    except UnicodeDecodeError:
        pass
    out = bytearray()
    pos, end = 0, len(data)
    while pos < end:
        size = _rune_size(data, pos)
        if size and data[pos : pos + size] != REPLACEMENT_BYTES:
            out += data[pos : pos + size]
            pos += size
            continue
        if end - pos < 4:
            break
        out.append(data[pos])
        pos += size or 1
    return bytes(out), data[pos:]


def _rune_size(data: bytes, pos: int) -> int:
    """Length of the valid UTF-8 rune at ``pos``, 0 if there is none (Go's RuneError of width 1)."""
    lead = data[pos]
    if lead < 0x80:
        return 1
    size = 2 if 0xC2 <= lead <= 0xDF else 3 if 0xE0 <= lead <= 0xEF else 4 if 0xF0 <= lead <= 0xF4 else 0
    try:
        data[pos : pos + size].decode()
    except UnicodeDecodeError:
        return 0
    return size if pos + size <= len(data) else 0


def loopback_address(host: str) -> str:
    """The address to dial; only loopback destinations are allowed."""
    if host in ("localhost", ""):
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise SessionFailure(f"destination {host} is not a loopback address") from None
    if not address.is_loopback:
        raise SessionFailure(f"destination {host} is not a loopback address")
    return str(address)


def agent_environment() -> dict[str, str]:
    env = dict(os.environ)
    env["TERM"] = "xterm-256color"
    env.setdefault("LANG", "C.UTF-8")
    return env


class Plugin:
    """Common plumbing: a bounded inbox drained by ``handle``, a finish future, task cleanup."""

    def __init__(self, channel: DataChannel) -> None:
        self.channel = channel
        self.inbox = Inbox(INBOX_LIMIT, channel.redeliver)
        self.finished: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        # Each Size message as (cols, rows, input bytes handled before it): the order it came in.
        self.sizes: list[tuple[int, int, int]] = []
        self.input_bytes = 0
        self._tasks: list[asyncio.Task[Any]] = []

    def spawn(self, coro: Awaitable[Any]) -> None:
        self._tasks.append(asyncio.ensure_future(coro))

    def finish(self, output: str = "") -> None:
        if not self.finished.done():
            self.finished.set_result(output)

    async def start(self) -> None:
        self.spawn(self._consume())

    def input(self, message: ClientMessage) -> bool:
        return self.inbox.offer(message)

    async def _consume(self) -> None:
        while (message := await self.inbox.get()) is not None:
            await self.handle(message)

    async def handle(self, message: ClientMessage) -> None:
        """Process one in-order input message (Output data, Flags)."""

    async def stop(self) -> None:
        self.inbox.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self.finish()

    async def pump_output(
        self, read: Callable[[int], Awaitable[bytes]], payload_type: int, cutter: OutputCutter
    ) -> None:
        """The agent's stdout/stderr writer: each read of up to ``READ_AHEAD`` bytes is cut into
        the agent's messages (``OutputCutter``), one await per burst."""
        send = self.channel.send
        while True:
            try:
                burst = await read(READ_AHEAD)
            except OSError:
                burst = b""
            if not burst:
                return
            for chunk in cutter.cut(burst):
                await send(payload_type, chunk)


class OutputCutter:
    """The agent's reads of 1024 bytes (less the prefix), each sent after what the previous one
    kept back (see ``split_utf8``); what is kept at the end is lost. Cutting a larger read gives
    the same messages as reading 1 KiB at a time from the same buffer."""

    def __init__(self, *, utf8: bool, prefix: bytes = b"") -> None:
        self._utf8 = utf8
        self._prefix = prefix
        self._size = CHUNK_SIZE - len(prefix)
        self._carry = b""
        self._need_prefix = True

    def cut(self, burst: bytes) -> list[bytes]:
        out = []
        prefix, carry, size = self._prefix, self._carry, self._size
        for pos in range(0, len(burst), size):
            data = burst[pos : pos + size]
            chunk = carry + prefix + data if self._need_prefix else carry + data
            self._need_prefix = data.endswith(b"\n")
            if self._utf8:
                chunk, carry = split_utf8(chunk)
            if chunk:
                out.append(chunk)
        self._carry = carry
        return out


def _controlling_tty(slave: int) -> Callable[[], None]:
    """Child-side setup: a new session whose controlling terminal is the pty slave.

    Uses the slave's own descriptor, not fd 0: uvloop runs preexec_fn before stdio is in place.
    """

    def setup() -> None:
        if os.getsid(0) != os.getpid():
            os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    return setup


async def _writable(fd: int) -> None:
    """Wait until a non-blocking fd is writable (rare: a pty that does not take its input)."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_writer(fd)


class _Readable:
    """Read readiness of one non-blocking fd, watched for as long as its reader keeps waiting.

    ``add_reader`` / ``remove_reader`` around every wait cost each echoed keystroke two epoll
    changes and, on uvloop, a poll handle set up anew (an FIONBIO ioctl). Here the watch stays
    registered across waits; it is dropped only when readiness finds nobody waiting (the reader
    is busy sending, so the level-triggered watch would wake the loop on every turn), and taken
    up again at the next wait. ``take``, when set, is tried first while the reader waits: True
    means it dealt with the readiness itself and the reader stays asleep.
    """

    def __init__(self, fd: int, take: Callable[[], bool] | None = None) -> None:
        self._fd = fd
        self._take = take
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        self._watching = False

    async def wait(self) -> None:
        self._waiter = waiter = self._loop.create_future()
        if not self._watching:
            self._loop.add_reader(self._fd, self._ready)
            self._watching = True
        try:
            await waiter
        finally:
            self._waiter = None

    def _ready(self) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()
        elif self._take is None or not self._take():
            self._waiter.set_result(None)

    def close(self) -> None:
        if self._watching:
            self._watching = False
            self._loop.remove_reader(self._fd)


class PtyPlugin(Plugin):
    """The master side is driven with plain non-blocking reads and writes: pipe transports on a
    pty master misbehave under uvloop (no output at all), and Linux reports the last slave closing
    as EIO, which is simply the end of output."""

    def __init__(self, channel: DataChannel, argv: list[str]) -> None:
        super().__init__(channel)
        self.argv = argv
        self._master = -1
        self._proc: asyncio.subprocess.Process | None = None
        self._readable: _Readable | None = None
        self._cutter = OutputCutter(utf8=True)
        self._drained = False
        self._writing = False  # the consumer holds input the pty has not taken yet

    async def start(self) -> None:
        master, slave = os.openpty()
        self._master = master
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=agent_environment(),
                preexec_fn=_controlling_tty(slave),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            os.close(master)
            self._master = -1
            raise SessionFailure(f"Unable to start command: {exc}") from None
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self._readable = _Readable(master, self._output_now)
        await super().start()
        self.spawn(self._run())

    async def _read(self, n: int) -> bytes:
        """The next output; after a short read the pty is taken as drained and waited on first
        (a keystroke's echo is one short read: no read that only says EAGAIN after it)."""
        assert self._readable is not None
        while True:
            if self._drained:
                await self._readable.wait()
            try:
                data = os.read(self._master, n)
            except BlockingIOError:
                self._drained = True
                continue
            except OSError:
                return b""
            self._drained = len(data) < n
            return data

    def _output_now(self) -> bool:
        """Output read and sent in the pty's readiness callback (the output task waits for it),
        when the channel takes a whole read without waiting: an echo wakes no task. False leaves
        it to the task (the end of output, too)."""
        if not self.channel.can_send_now(READ_AHEAD // CHUNK_SIZE):  # what one read is cut into
            return False
        try:
            burst = os.read(self._master, READ_AHEAD)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not burst:
            return False
        return self.channel.send_now(PayloadType.OUTPUT, self._cutter.cut(burst))  # checked above

    async def _run(self) -> None:
        await self.pump_output(self._read, PayloadType.OUTPUT, self._cutter)
        if self._proc is not None:
            await self._proc.wait()
        self.finish()

    def input(self, message: ClientMessage) -> bool:
        """Input and resizes in sequence order, as the agent writes stdin and sets the size inline:
        here too when nothing is queued or being written (a keystroke reaches the pty in the turn
        its frame arrived, not one task switch later); what the pty does not take at once waits
        in the inbox for the consumer."""
        ptype = message.payload_type
        if ptype not in (PayloadType.OUTPUT, PayloadType.SIZE):
            return True
        if not self._writing and self.inbox.empty:
            if ptype == PayloadType.SIZE:
                self._resize(message.payload)
                return True
            rest = self._write(memoryview(message.payload))
            if not rest:
                return True
            message = dataclasses.replace(message, payload=bytes(rest))
        return super().input(message)

    async def handle(self, message: ClientMessage) -> None:
        if message.payload_type == PayloadType.SIZE:
            self._resize(message.payload)
            return
        self._writing = True
        try:
            rest = self._write(memoryview(message.payload))
            while rest:
                await _writable(self._master)
                rest = self._write(rest)
        finally:
            self._writing = False

    def _resize(self, payload: bytes) -> None:
        with contextlib.suppress(CodecError, OSError):
            size = SizeData.from_json(payload)
            self.sizes.append((size.cols, size.rows, self.input_bytes))
            winsize = struct.pack("HHHH", min(size.rows, 0xFFFF), min(size.cols, 0xFFFF), 0, 0)
            fcntl.ioctl(self._master, termios.TIOCSWINSZ, winsize)

    def _write(self, data: memoryview) -> memoryview:
        """Write what the pty takes now; the rest (empty once all is written, or the pty is gone)."""
        while data and self._master >= 0:
            try:
                written = os.write(self._master, data)
            except BlockingIOError:
                return data
            except OSError:
                break
            self.input_bytes += written
            data = data[written:]
        return data[:0]

    async def stop(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            await self._proc.wait()
        await super().stop()
        if self._readable is not None:
            self._readable.close()
        if self._master >= 0:
            os.close(self._master)
            self._master = -1


class CommandPlugin(Plugin):
    def __init__(self, channel: DataChannel, properties: Any) -> None:
        super().__init__(channel)
        command = str(shell_property(properties, "commands", "") or "")
        separate = shell_property(properties, "separateOutputStream", False)
        self.separate = separate is True or str(separate).lower() == "true"
        self.stdout_prefix = str(shell_property(properties, "stdoutSeparatorPrefix", "") or "").encode()
        self.stderr_prefix = str(shell_property(properties, "stderrSeparatorPrefix", "") or "").encode()
        try:
            self.argv = shlex.split(command)
        except ValueError as exc:
            raise SessionFailure(f"Failed to parse commands input: {exc}") from None
        if not self.argv:
            raise SessionFailure("no command to run")
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        await super().start()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE if self.separate else asyncio.subprocess.STDOUT,
                env=agent_environment(),
                start_new_session=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            self.spawn(self._report_start_error(f"Error occurred starting the command: {exc}\n"))
            return
        self.spawn(self._run(self._proc))

    async def _report_start_error(self, text: str) -> None:
        await self.channel.send(PayloadType.STDERR if self.separate else PayloadType.OUTPUT, text.encode())
        if self.separate:
            await self.channel.send(PayloadType.EXIT_CODE, exit_code_payload(ERROR_EXIT_CODE))
        self.finish()

    async def _run(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        pumps = [
            self.pump_output(
                proc.stdout.read, PayloadType.OUTPUT, OutputCutter(utf8=True, prefix=self.stdout_prefix)
            )
        ]
        if proc.stderr is not None:
            pumps.append(
                self.pump_output(
                    proc.stderr.read, PayloadType.STDERR, OutputCutter(utf8=True, prefix=self.stderr_prefix)
                )
            )
        await asyncio.gather(*pumps)
        code = await proc.wait()
        if self.separate:
            await self.channel.send(PayloadType.EXIT_CODE, exit_code_payload(-1 if code < 0 else code))
        self.finish()

    async def handle(self, message: ClientMessage) -> None:
        if message.payload_type != PayloadType.OUTPUT or self._proc is None:
            return
        for byte in message.payload:
            sig = CONTROL_SIGNALS.get(byte)
            if sig is not None and self._proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self._proc.send_signal(sig)
                return

    async def stop(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()
        await super().stop()


async def _dial(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(host, port), 10.0)


def _close_writer(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None and not writer.is_closing():
        writer.close()


class BasicPortPlugin(Plugin):
    """stdio (``reconnect=False``: destination EOF ends the session) and basic port modes."""

    def __init__(self, channel: DataChannel, host: str, port: int, *, reconnect: bool) -> None:
        super().__init__(channel)
        self.host, self.port, self.reconnect = host, port, reconnect
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._connect()
        await super().start()

    async def _connect(self) -> None:
        try:
            reader, writer = await _dial(self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise SessionFailure(f"Unable to connect to specified port: {exc}") from None
        self._writer = writer
        self._reader_task = asyncio.ensure_future(self._pump(reader, writer))
        self._tasks.append(self._reader_task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.pump_output(reader.read, PayloadType.OUTPUT, OutputCutter(utf8=False))
        _close_writer(writer)
        if self._writer is writer:
            self._writer = None
            if not self.reconnect:
                self.finish()

    async def handle(self, message: ClientMessage) -> None:
        if message.payload_type == PayloadType.FLAG:
            with contextlib.suppress(CodecError):
                if parse_flag(message.payload) == PortFlag.DISCONNECT_TO_PORT:
                    writer, self._writer = self._writer, None
                    _close_writer(writer)
            return
        if message.payload_type != PayloadType.OUTPUT:
            return
        if self._writer is None:
            try:
                await self._connect()
            except SessionFailure as exc:
                self.finish(str(exc))
                return
        assert self._writer is not None
        self._writer.write(message.payload)
        with contextlib.suppress(ConnectionError):
            await self._writer.drain()

    async def stop(self) -> None:
        await super().stop()
        _close_writer(self._writer)


class MuxPortPlugin(Plugin):
    def __init__(self, channel: DataChannel, host: str, port: int, *, keepalive: bool) -> None:
        super().__init__(channel)
        self.host, self.port = host, port
        self.smux = SmuxSession(self._write, client=False, keepalive=(10.0, 30.0) if keepalive else None)

    async def _write(self, data: bytes) -> None:
        await self.channel.send_data(data)

    async def start(self) -> None:
        await super().start()
        self.spawn(self._accept_loop())

    async def handle(self, message: ClientMessage) -> None:
        if message.payload_type == PayloadType.OUTPUT:
            await self.smux.feed(message.payload)

    async def _accept_loop(self) -> None:
        while True:
            stream = await self.smux.accept()
            self.spawn(self._serve(stream))

    async def _serve(self, stream: SmuxStream) -> None:
        try:
            reader, writer = await _dial(self.host, self.port)
        except (OSError, TimeoutError):
            await self.channel.send(PayloadType.FLAG, flag_payload(PortFlag.CONNECT_TO_PORT_ERROR))
            await stream.close()
            return
        try:
            upstream = asyncio.ensure_future(self._copy_to_tcp(stream, writer))
            downstream = asyncio.ensure_future(self._copy_to_stream(reader, stream))
            await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
            upstream.cancel()
            downstream.cancel()
        finally:
            _close_writer(writer)
            with contextlib.suppress(Exception):
                await stream.close()

    @staticmethod
    async def _copy_to_tcp(stream: SmuxStream, writer: asyncio.StreamWriter) -> None:
        while data := await stream.read(65536):
            writer.write(data)
            await writer.drain()

    @staticmethod
    async def _copy_to_stream(reader: asyncio.StreamReader, stream: SmuxStream) -> None:
        while data := await reader.read(65536):
            await stream.write(data)

    async def stop(self) -> None:
        self.smux.close()
        await super().stop()
