"""Asyncio Session Manager client: what AWS's session-manager-plugin does, as a library.

Start a session on the control plane (``sshgate.ssm.control.SsmControl``: ``start_session`` for
EC2 / managed instances, ``execute_command`` for ECS), then open its data channel: ``connect``
returns whichever session kind the agent announced, ``open_shell`` / ``open_command`` /
``open_port`` the one the caller expects (``SessionKindError`` otherwise). Opening a channel opens
the websocket, sends the open-data-channel frame (ClientVersion above 1.2.331.0 so the agent turns
smux keep-alive off) and answers the agent's handshake. The session kinds:

``ShellSession`` (Standard_Stream, InteractiveCommands, ECS exec)
    ``await read() -> bytes`` (b"" once the session ended; also ``async for chunk in session``),
    ``await write(data)``, ``await resize(cols, rows)``; without waiting: ``push(sink)`` (output
    handed over as it arrives) and ``write_now(data) -> bool``. Shells carry no exit status
    (docs/ssm-protocol.md §8.1).
``CommandSession`` (NonInteractiveCommands)
    ``await read() -> Output | None`` where ``Output.stream`` is ``"stdout"`` or ``"stderr"``,
    ``exit_code`` / ``await wait_exit()`` (sent only with ``separateOutputStream``),
    ``await write(data)``: the agent gives the command no stdin and only turns 0x03 / 0x1C into
    SIGINT / SIGQUIT, so ``send_interrupt()`` is the useful form.
``PortSession`` (Port documents)
    ``mode`` is ``PortMode.STDIO`` (AWS-StartSSHSession), ``BASIC`` or ``MUX`` (LocalPortForwarding
    on agents newer than 3.0.196.0). ``await open_stream() -> PortStream`` gives a byte stream to the
    destination: in mux mode each call opens a new smux stream (many at once); in basic mode the
    single agent connection is leased to one stream at a time and closing it sends
    DisconnectToPort; in stdio mode there is exactly one stream. ``PortStream.read(n)`` raises
    ``ConnectToPortError`` when the agent could not dial the destination.

Every session has ``session_id``, ``session_type``, ``properties``, ``agent_version``, ``closed``,
``close_reason``, ``await wait_closed()`` and ``await close()`` (port sessions send the
TerminateSession flag; the others call ``ssm:TerminateSession`` through ``control``, a
``SessionControl`` such as ``SsmControl``). Output flows
with backpressure: unread output stays unacknowledged once ~2 MiB are queued, so the agent slows
down instead of this process buffering without bound. If the websocket drops, the session resumes
on its own through ``control.resume`` (``ssm:ResumeSession``) with the same sequence state.
The agent requesting KMS encryption (§10) fails ``connect`` with ``KmsEncryptionUnsupported``.

A malformed payload from the agent (acknowledge, handshake, exit code, channel_closed: anything
the codec refuses, or a message over ``MAX_MESSAGE``) ends the session at once with an
``AgentProtocolError`` in ``violation`` and ``close_reason``, and the session is terminated on
the service: a broken or hostile agent cannot leave it hanging. Malformed frames (a bad header or
digest) are dropped unacknowledged, as the plugin drops them, and the agent resends.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, Protocol, TypedDict, TypeVar, Unpack

import aiohttp

from sshgate.ssm.codec import (
    ActionStatus,
    ChannelClosed,
    ClientMessage,
    CodecError,
    HandshakeComplete,
    HandshakeRequest,
    HandshakeResponse,
    OpenDataChannel,
    PayloadType,
    PortFlag,
    ProcessedAction,
    SizeData,
    flag_payload,
    parse_exit_code,
    parse_flag,
    version_gt,
)
from sshgate.ssm.reliable import (
    CHUNK_SIZE,
    CLIENT,
    DataChannel,
    Inbox,
    websocket_post,
    websocket_transport,
    websocket_writable,
)
from sshgate.ssm.smux import SmuxError, SmuxSession, SmuxStream, StreamClosed
from sshgate.ssm.websocket_direct import take_directly

CLIENT_VERSION = "1.2.650.0"
SHELL_TYPES = frozenset({"Standard_Stream", "InteractiveCommands"})
KNOWN_TYPES = SHELL_TYPES | {"NonInteractiveCommands", "Port"}
MUX_AFTER_AGENT = "3.0.196.0"
SMUX_KEEPALIVE_UNTIL_AGENT = "3.1.1511.0"
INBOX_LIMIT = 2 * 1024 * 1024
PING_INTERVAL = 300.0
RESUME_ATTEMPTS = 5
MAX_MESSAGE = 1 << 20  # the agent's messages carry at most 1 KiB of data (handshakes a few KiB)
READ_BATCH = 64 * 1024  # what one read takes from the inbox at most (the agent sends 1 KiB chunks)
DATA_TYPES = frozenset({PayloadType.OUTPUT, PayloadType.STDERR})


class SsmSessionError(Exception):
    """The session could not be opened or ended abnormally."""


class KmsEncryptionUnsupported(SsmSessionError):
    """The agent asked for KMS encryption, which this client does not implement."""


class ConnectToPortError(SsmSessionError):
    """The agent could not connect to the port-forwarding destination."""


class SessionKindError(SsmSessionError):
    """The agent opened another kind of session than the caller asked for (wrong document)."""


class AgentProtocolError(SsmSessionError):
    """The agent sent what the protocol does not allow; ``what`` names the message."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(f"the agent sent a malformed {what}: {detail}")
        self.what = what


@dataclass(frozen=True, slots=True)
class StreamTarget:
    """What StartSession / ResumeSession / ECS ExecuteCommand hand back."""

    session_id: str
    stream_url: str
    token_value: str

    @classmethod
    def from_response(cls, response: Mapping[str, Any]) -> StreamTarget:
        """Accept SSM's PascalCase output, ECS's camelCase ``session`` object, or the full ECS output."""
        inner = response.get("session")
        source: Mapping[str, Any] = inner if isinstance(inner, Mapping) else response
        lowered = {str(k).lower(): v for k, v in source.items()}
        try:
            return cls(str(lowered["sessionid"]), str(lowered["streamurl"]), str(lowered["tokenvalue"]))
        except KeyError as exc:
            raise SsmSessionError(f"session response lacks {exc.args[0]}") from None


class SessionControl(Protocol):
    """The control-plane calls a live session needs after it started."""

    async def resume(self, session_id: str) -> str:
        """A fresh token (ssm:ResumeSession); an empty string means the session timed out."""
        ...

    async def terminate(self, session_id: str) -> None: ...


class PortMode(Enum):
    STDIO = "stdio"
    BASIC = "basic"
    MUX = "mux"


class PortStream(Protocol):
    async def read(self, n: int = -1) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Output:
    stream: Literal["stdout", "stderr"]
    data: bytes


class _Connection:
    """One data channel: websocket(s), reliability, handshake, resume. Session classes wrap it."""

    def __init__(
        self,
        target: StreamTarget,
        control: SessionControl | None,
        client_version: str,
        http: aiohttp.ClientSession | None,
    ) -> None:
        self.target = target
        self.control = control
        self.client_version = client_version
        self.client_id = str(uuid.uuid4())
        self._own_http = http is None
        self._http = http
        self.channel = DataChannel(
            CLIENT,
            deliver=self._deliver,
            on_control=self._on_control,
            on_failure=self._on_failure,
            on_malformed=self._violated,
        )
        self.inbox = Inbox(INBOX_LIMIT, self.channel.redeliver)
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = asyncio.Event()
        self.close_reason: str | None = None
        self.session_type: str | None = None
        self.properties: Any = None
        self.agent_version: str | None = None
        self.customer_message = ""
        self._handshaken = False
        self.exit_code: int | None = None
        self.violation: AgentProtocolError | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    # -- websocket -----------------------------------------------------------------------------
    async def open(self, token: str) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        ws = await self._http.ws_connect(self.target.stream_url, autoping=True, max_msg_size=MAX_MESSAGE)
        take_directly(ws, self._take, MAX_MESSAGE)  # before the agent speaks
        opening = OpenDataChannel(token, self.client_id, self.client_version)
        await ws.send_str(opening.to_json())
        self._ws = ws
        self.channel.start()
        await self.channel.attach(websocket_transport(ws), websocket_post(ws), lambda: websocket_writable(ws))
        self._spawn(self._read_loop(ws))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        ping = asyncio.get_running_loop().create_task(self._ping_loop(ws))
        close_text = ""
        inbox, feed = self.inbox, self.channel.feed
        try:
            while True:
                if inbox.full:
                    await inbox.room()
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.BINARY:
                    feed(msg.data)
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    feed(msg.data.encode())
                elif msg.type == aiohttp.WSMsgType.CLOSE:
                    close_text = f"code {msg.data}: {msg.extra}"
                elif msg.type == aiohttp.WSMsgType.ERROR and _too_big(msg.data):
                    self._violated("message", CodecError(f"a message over {MAX_MESSAGE} bytes"))
                    break
                elif msg.type in (
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.ERROR,
                ):
                    break
        except (aiohttp.ClientError, ConnectionError, OSError):
            pass
        except Exception as exc:  # a message this client cannot handle ends the session, never hangs it
            self._violated("message", exc)
        finally:
            ping.cancel()
        if self._ws is not ws or self.closed.is_set() or self._closing:
            return
        self.channel.detach()
        if not self.ready.done():
            # Refused before the session started (bad or expired token): nothing to resume.
            self._finish(f"the service closed the data channel ({close_text or 'connection lost'})")
        else:
            await self._resume()

    def _take(self, raw: bytes) -> bool:
        """A binary message in the websocket's receive callback: fed to the channel now unless
        the inbox is full (then the read loop gets it once there is room, as before)."""
        if self.inbox.full:
            return False
        try:
            self.channel.feed(raw)
        except Exception as exc:  # as in the read loop: the session ends, never hangs
            self._violated("message", exc)
        return True

    @staticmethod
    async def _ping_loop(ws: aiohttp.ClientWebSocketResponse) -> None:
        while not ws.closed:
            await asyncio.sleep(PING_INTERVAL)
            with contextlib.suppress(Exception):
                await ws.ping(b"keepalive")

    async def _resume(self) -> None:
        """Re-dial with a ResumeSession token, keeping the sequence state (plugin retry policy)."""
        if self.control is None:
            self._finish("websocket lost and no control plane to resume the session")
            return
        delay = random.uniform(0.1, 0.2)
        error: BaseException | None = None
        for _ in range(RESUME_ATTEMPTS):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            try:
                token = await self.control.resume(self.target.session_id)
                if not token:
                    self._finish("session timed out (ResumeSession returned no token)")
                    return
                await self.open(token)
                return
            except Exception as exc:
                error = exc
        self._finish(f"could not resume the session: {error}")

    # -- incoming ------------------------------------------------------------------------------
    def _deliver(self, message: ClientMessage) -> bool:
        ptype = message.payload_type
        if ptype == PayloadType.HANDSHAKE_REQUEST:
            # One per session, before it is ready: each answer stays buffered until acked, so
            # repeated requests from a hostile agent would pin the gateway's memory.
            if self._handshaken or self.ready.done():
                late = CodecError("a second handshake request, or one after the session started")
                self._violated("handshake request", late)
                return True
            self._handshaken = True
            self._spawn(self._answer_handshake(message.payload))
            return True
        if ptype == PayloadType.HANDSHAKE_COMPLETE:
            try:
                self.customer_message = HandshakeComplete.from_json(message.payload).customer_message
            except CodecError as exc:
                self._violated("handshake complete", exc)
                return True
            self._set_ready()
            return True
        if ptype in (PayloadType.ENC_CHALLENGE_REQUEST, PayloadType.ENC_CHALLENGE_RESPONSE):
            return True
        if ptype == PayloadType.EXIT_CODE:
            try:
                self.exit_code = parse_exit_code(message.payload)
            except CodecError as exc:
                self._violated("exit code", exc)
            return True
        if not self.ready.done() and self.session_type is None:
            # No handshake: the first output tells us it is a shell (plugin ProcessFirstMessage).
            self.session_type = "Standard_Stream"
            self._set_ready()
        return self.inbox.offer(message)

    def _set_ready(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    async def _answer_handshake(self, payload: bytes) -> None:
        try:
            request = HandshakeRequest.from_json(payload)
        except CodecError as exc:
            self._violated("handshake request", exc)
            return
        self.agent_version = request.agent_version
        processed: list[ProcessedAction] = []
        failure: SsmSessionError | None = None
        for action in request.actions:
            if action.action_type == "SessionType":
                params = action.parameters if isinstance(action.parameters, dict) else {}
                self.session_type = str(params.get("SessionType", ""))
                self.properties = params.get("Properties")
                ok = self.session_type in KNOWN_TYPES
                status = ActionStatus.SUCCESS if ok else ActionStatus.FAILED
                error = "" if ok else f"unknown session type {self.session_type}"
                processed.append(ProcessedAction("SessionType", status, None, error))
            elif action.action_type == "KMSEncryption":
                message = "KMS encryption of session data is not supported by this client"
                processed.append(ProcessedAction("KMSEncryption", ActionStatus.FAILED, None, message))
                failure = KmsEncryptionUnsupported(
                    f"the agent requires KMS encryption for session {self.target.session_id}; {message}"
                )
            else:
                processed.append(
                    ProcessedAction(action.action_type, ActionStatus.UNSUPPORTED, None, "unsupported action")
                )
        response = HandshakeResponse(self.client_version, tuple(processed))
        with contextlib.suppress(ConnectionError):
            await self.channel.send(PayloadType.HANDSHAKE_RESPONSE, response.to_json())
        if failure is not None:
            self._fail(failure)

    def _on_control(self, message: ClientMessage) -> None:
        if message.message_type == "channel_closed":
            try:
                reason = ChannelClosed.from_json(message.payload).output
            except CodecError as exc:
                self._violated("channel_closed", exc)
                return
            self._finish(reason)

    def _on_failure(self, exc: BaseException) -> None:
        self._fail(SsmSessionError(str(exc)))

    def _violated(self, what: str, exc: BaseException) -> None:
        """The agent broke the protocol: end the session here and on the service."""
        if self.closed.is_set():
            return
        self.violation = AgentProtocolError(what, f"{type(exc).__name__}: {exc}")
        self._fail(self.violation)
        if self.control is not None:
            self._spawn(self._terminate_remote())

    async def _terminate_remote(self) -> None:
        assert self.control is not None
        with contextlib.suppress(Exception):
            await self.control.terminate(self.target.session_id)

    def _fail(self, exc: SsmSessionError) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc)
        self._finish(str(exc))

    def _finish(self, reason: str) -> None:
        """The session is over: readers drain what is queued, then see the end."""
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        self.inbox.close()
        self.channel.close()
        if not self.ready.done():
            self.ready.set_exception(SsmSessionError(reason or "session closed before it was ready"))
        self._spawn(self._shutdown())

    async def _shutdown(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._own_http and self._http is not None:
            await self._http.close()

    # -- outgoing ------------------------------------------------------------------------------
    async def send(self, payload_type: int, payload: bytes) -> None:
        if self.closed.is_set():
            raise SsmSessionError(f"session {self.target.session_id} is closed: {self.close_reason}")
        await self.channel.send_data(payload, payload_type)

    def send_now(self, payload_type: int, payload: bytes) -> bool:
        """``send`` in this call, or False (nothing sent) when it would have to wait."""
        chunks = [payload[pos : pos + CHUNK_SIZE] for pos in range(0, len(payload), CHUNK_SIZE)]
        return not self.closed.is_set() and self.channel.send_now(payload_type, chunks)

    async def terminate(self, *, flag: bool) -> None:
        if self.closed.is_set():
            return
        if flag:  # as the plugin does for port sessions; the API call follows, as the AWS CLI's
            with contextlib.suppress(SsmSessionError, ConnectionError):
                await self.send(PayloadType.FLAG, flag_payload(PortFlag.TERMINATE_SESSION))
                await self.channel.wait_drained(1.0)
        if self.control is not None:  # the agent may ignore the flag, or the socket be down
            with contextlib.suppress(Exception):
                await self.control.terminate(self.target.session_id)
        self._finish("terminated by client")
        await self._shutdown()


class Session:
    """State shared by every session kind; see the module docstring."""

    expected_types = "any"  # the session types (docs/ssm-protocol.md §8) this class stands for

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    @property
    def session_id(self) -> str:
        return self._conn.target.session_id

    @property
    def session_type(self) -> str:
        return self._conn.session_type or ""

    @property
    def properties(self) -> Any:
        return self._conn.properties

    @property
    def agent_version(self) -> str | None:
        return self._conn.agent_version

    @property
    def customer_message(self) -> str:
        return self._conn.customer_message

    @property
    def closed(self) -> bool:
        return self._conn.closed.is_set()

    @property
    def close_reason(self) -> str | None:
        return self._conn.close_reason

    @property
    def violation(self) -> AgentProtocolError | None:
        """Why the session was ended, if the agent broke the protocol."""
        return self._conn.violation

    @property
    def stats(self) -> dict[str, int]:
        """Reliability counters of this client's side of the channel (for logs and tests)."""
        channel = self._conn.channel
        return {
            "retransmits": channel.retransmits,
            "out_of_order": channel.out_of_order,
            "duplicates": channel.duplicates,
            "dropped": channel.dropped,
        }

    async def wait_closed(self) -> None:
        await self._conn.closed.wait()

    async def close(self) -> None:
        await self._conn.terminate(flag=False)

    async def __aenter__(self: _S) -> _S:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


_S = TypeVar("_S", bound=Session)


class ShellSession(Session):
    expected_types = "Standard_Stream or InteractiveCommands"
    _sizing: asyncio.Task[None] | None = None

    async def _agent_spoke(self) -> None:
        """Hold input until the agent's first message, as the plugin does (§6.3: earlier input
        may be taken and discarded while the agent still decides on a handshake)."""
        ready = self._conn.ready
        if not ready.done():
            await asyncio.shield(ready)
        ready.result()

    async def read(self) -> bytes:
        """Everything the agent has sent so far (stdout and stderr alike), b"" at the end."""
        while batch := await self._conn.inbox.get_many(READ_BATCH):
            if data := b"".join(m.payload for m in batch if m.payload_type in DATA_TYPES):
                return data
        return b""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await self.read():
            yield chunk

    def push(self, sink: Callable[[bytes], bool]) -> None:
        """Hand output to ``sink`` as it arrives, in the websocket's receive callback, while
        nothing waits for ``read``: no task wakes per echoed keystroke. ``sink`` returning False
        (its consumer is paused) leaves the data, and what follows it, to ``read``; backpressure
        is then ``read``'s."""

        def take(message: ClientMessage) -> bool:
            if message.payload_type not in DATA_TYPES or not message.payload:
                return True  # what read() skips
            return sink(message.payload)

        self._conn.inbox.sink = take

    async def write(self, data: bytes) -> None:
        await self._agent_spoke()
        await self._conn.send(PayloadType.OUTPUT, data)

    def write_now(self, data: bytes) -> bool:
        """``write`` in this call when nothing has to be waited for (the agent has spoken, the
        window size went first, the socket and the send buffer have room); False: nothing was
        sent, call ``write``."""
        ready, sizing = self._conn.ready, self._sizing
        if not ready.done() or ready.cancelled() or ready.exception() is not None:
            return False
        if sizing is not None and not sizing.done():
            return False
        return self._conn.send_now(PayloadType.OUTPUT, data)

    async def resize(self, cols: int, rows: int) -> None:
        await self._agent_spoke()
        await self._conn.send(PayloadType.SIZE, SizeData(cols, rows).to_json())


class CommandSession(Session):
    expected_types = "NonInteractiveCommands"

    def __init__(self, conn: _Connection) -> None:
        super().__init__(conn)
        self._pending: deque[ClientMessage] = deque()

    async def read(self) -> Output | None:
        """What arrived of one stream, joined (stdout and stderr keep their order), None at the end."""
        pending = self._pending
        while not pending:
            batch = await self._conn.inbox.get_many(READ_BATCH)
            if not batch:
                return None
            pending.extend(m for m in batch if m.payload_type in DATA_TYPES and m.payload)
        kind = pending[0].payload_type
        parts = []
        while pending and pending[0].payload_type == kind:
            parts.append(pending.popleft().payload)
        return Output("stdout" if kind == PayloadType.OUTPUT else "stderr", b"".join(parts))

    async def write(self, data: bytes) -> None:
        await self._conn.send(PayloadType.OUTPUT, data)

    async def send_interrupt(self) -> None:
        """Ctrl-C: the agent delivers SIGINT to the command."""
        await self.write(b"\x03")

    @property
    def exit_code(self) -> int | None:
        return self._conn.exit_code

    async def wait_exit(self) -> int | None:
        """Wait for the session to end; the exit code is None unless separateOutputStream was set."""
        await self._conn.closed.wait()
        return self._conn.exit_code


class _DirectStream:
    """The one byte stream of a stdio or basic port session, read straight from the inbox."""

    def __init__(self, session: PortSession) -> None:
        self._session = session
        self._pending = b""
        self._eof = False

    async def read(self, n: int = -1) -> bytes:
        while not self._pending and not self._eof:
            batch = await self._session._conn.inbox.get_many(READ_BATCH)
            if not batch:
                self._eof = True
            self._pending = b"".join(m.payload for m in batch if m.payload_type == PayloadType.OUTPUT)
        data = self._pending if n < 0 else self._pending[:n]
        self._pending = self._pending[len(data) :]
        return data

    async def write(self, data: bytes) -> None:
        if self._eof:
            raise StreamClosed("port stream is closed")
        await self._session._conn.send(PayloadType.OUTPUT, data)

    async def close(self) -> None:
        if self._eof:
            return
        self._eof = True
        await self._session._release(self)


class PortSession(Session):
    expected_types = "Port"

    def __init__(self, conn: _Connection) -> None:
        super().__init__(conn)
        props = conn.properties if isinstance(conn.properties, dict) else {}
        version = conn.agent_version or ""
        if props.get("type") == "LocalPortForwarding":
            self.mode = PortMode.MUX if version_gt(version, MUX_AFTER_AGENT) else PortMode.BASIC
        else:
            self.mode = PortMode.STDIO
        self._lease = asyncio.Lock()
        self._stdio_used = False
        self._smux: SmuxSession | None = None
        self._connect_errors = 0
        if self.mode is PortMode.MUX:
            keepalive = None if version_gt(version, SMUX_KEEPALIVE_UNTIL_AGENT) else (10.0, 30.0)
            self._smux = SmuxSession(
                self._send_smux, client=True, keepalive=keepalive, on_peer_fin=self._on_peer_fin
            )
            conn._spawn(self._pump_smux(self._smux))

    async def _send_smux(self, data: bytes) -> None:
        await self._conn.send(PayloadType.OUTPUT, data)

    async def _pump_smux(self, smux: SmuxSession) -> None:
        while batch := await self._conn.inbox.get_many(READ_BATCH):
            data: list[bytes] = []
            for message in batch:  # consecutive data in one feed; a flag keeps its place
                if message.payload_type == PayloadType.OUTPUT:
                    data.append(message.payload)
                elif message.payload_type == PayloadType.FLAG:
                    await self._feed_smux(smux, data)
                    with contextlib.suppress(CodecError):
                        if parse_flag(message.payload) == PortFlag.CONNECT_TO_PORT_ERROR:
                            self._connect_errors += 1
            await self._feed_smux(smux, data)
        smux.close(SsmSessionError(self._conn.close_reason or "session closed"))

    async def _feed_smux(self, smux: SmuxSession, data: list[bytes]) -> None:
        """A frame the smux session cannot read breaks the protocol: the SSM session ends here
        and on the service (quietly closing only the smux side left a port session no stream could
        use, and later forwards to its target failed until the connection closed)."""
        if data:
            joined = b"".join(data)
            data.clear()
            try:
                await smux.feed(joined)
            except SmuxError as exc:
                self._conn._violated("smux frame", exc)

    def _on_peer_fin(self, stream: SmuxStream) -> None:
        """ConnectToPortError names no stream: blame the next stream the agent closes unused."""
        if self._connect_errors and stream.bytes_received == 0:
            self._connect_errors -= 1
            stream.fail(ConnectToPortError(f"agent could not connect to {self.destination}"))

    @property
    def destination(self) -> str:
        props = self._conn.properties if isinstance(self._conn.properties, dict) else {}
        return f"{props.get('host', 'localhost')}:{props.get('portNumber', '?')}"

    async def open_stream(self) -> PortStream:
        if self._smux is not None:
            return await self._smux.open_stream()
        if self.mode is PortMode.STDIO:
            if self._stdio_used:
                raise SsmSessionError("a stdio port session carries exactly one stream")
            self._stdio_used = True
        else:
            await self._lease.acquire()
        return _DirectStream(self)

    async def _release(self, stream: _DirectStream) -> None:
        if self.mode is PortMode.BASIC:
            with contextlib.suppress(SsmSessionError, ConnectionError):
                await self._conn.send(PayloadType.FLAG, flag_payload(PortFlag.DISCONNECT_TO_PORT))
            self._lease.release()

    async def close(self) -> None:
        await self._conn.terminate(flag=True)


def _too_big(error: object) -> bool:
    return isinstance(error, aiohttp.WebSocketError) and error.code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


async def connect(
    target: StreamTarget,
    *,
    control: SessionControl | None = None,
    size: tuple[int, int] | None = None,
    client_version: str = CLIENT_VERSION,
    http: aiohttp.ClientSession | None = None,
    timeout: float = 30.0,
    no_handshake: bool = False,
) -> Session:
    """Open the data channel and return the session kind the agent announced.

    ``size`` (cols, rows) is sent first for shell sessions, as the plugin does. With
    ``no_handshake`` (the document starts Standard_Stream or InteractiveCommands, which have no handshake) a
    :class:`ShellSession` is returned as soon as the channel is open: a command that stays silent
    (``sleep 60`` with a terminal) must not fail in connect; its input waits for the agent.
    """
    conn = _Connection(target, control, client_version, http)
    try:
        async with asyncio.timeout(timeout):
            await conn.open(target.token_value)
            if not no_handshake:
                await asyncio.shield(conn.ready)
    except BaseException:
        conn._finish("connect failed")
        if not conn.ready.cancelled():
            conn.ready.exception()  # retrieved here: the caller gets the exception raised above
        await conn._shutdown()
        raise
    session_type = conn.session_type or ""
    session: Session
    if session_type == "Port":
        session = PortSession(conn)
    elif session_type == "NonInteractiveCommands":
        session = CommandSession(conn)
    else:
        session = ShellSession(conn)
        if size is not None and conn.ready.done():
            await session.resize(*size)
        elif size is not None:  # started now, so it is sent before any input queued after it
            session._sizing = asyncio.get_running_loop().create_task(session.resize(*size))
            session._sizing.add_done_callback(lambda task: task.cancelled() or task.exception())
    return session


class ConnectOptions(TypedDict, total=False):
    """``connect``'s keyword arguments, for the typed openers below."""

    control: SessionControl | None
    size: tuple[int, int] | None
    client_version: str
    http: aiohttp.ClientSession | None
    timeout: float
    no_handshake: bool


async def _connect_as(kind: type[_S], target: StreamTarget, options: ConnectOptions) -> _S:
    session = await connect(target, **options)
    if not isinstance(session, kind):
        await session.close()
        raise SessionKindError(
            f"the document opened a {session.session_type or 'unknown'} session, not {kind.expected_types}"
        )
    return session


async def open_shell(target: StreamTarget, **options: Unpack[ConnectOptions]) -> ShellSession:
    return await _connect_as(ShellSession, target, options)


async def open_command(target: StreamTarget, **options: Unpack[ConnectOptions]) -> CommandSession:
    return await _connect_as(CommandSession, target, options)


async def open_port(target: StreamTarget, **options: Unpack[ConnectOptions]) -> PortSession:
    return await _connect_as(PortSession, target, options)
