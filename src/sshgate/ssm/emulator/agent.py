"""One emulated session: the agent's data channel plus the service's part of it (MGS).

``AgentSession`` outlives its websockets: a client may reconnect with a ResumeSession token and
continue with the same sequence state. On the first connection it runs the agent's flow
(docs/ssm-protocol.md §7): Port and NonInteractiveCommands sessions (and any session when a KMS key is
configured) start with HandshakeRequest → HandshakeResponse (≤15 s) → HandshakeComplete, and stream
data arriving before completion is acked and discarded; shells skip the handshake, and like the
live service the emulator first sends a ``start_publication`` with a bogus digest. Until the
plugin's process or TCP connection is up, stream data gets "handler not ready": no ack, so the
client's reliable layer resends it (``shell_unix.go`` / ``port.go`` ``InputStreamMessageHandler``).
When the plugin finishes, the agent flushes (≤ ``flush_timeout``), then the service sends ``channel_closed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shlex
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType

from sshgate.ssm.codec import (
    ActionStatus,
    ChannelClosed,
    ClientMessage,
    CodecError,
    HandshakeComplete,
    HandshakeRequest,
    HandshakeResponse,
    HeaderFlag,
    MessageType,
    OpenDataChannel,
    PayloadType,
    PortFlag,
    encode,
    parse_flag,
    version_ge,
    version_gt,
)
from sshgate.ssm.emulator.documents import ResolvedDocument, shell_property
from sshgate.ssm.emulator.faults import Faults, FaultyLink
from sshgate.ssm.emulator.plugins import (
    BasicPortPlugin,
    CommandPlugin,
    MuxPortPlugin,
    Plugin,
    PtyPlugin,
    SessionFailure,
    loopback_address,
)
from sshgate.ssm.reliable import (
    AGENT,
    DataChannel,
    websocket_post,
    websocket_transport,
    websocket_writable,
)
from sshgate.ssm.websocket_direct import DirectWebSocketResponse

HANDSHAKE_TIMEOUT = 15.0
MUX_MIN_CLIENT = "1.1.70"
MUX_AFTER_AGENT = "3.0.196.0"
SMUX_KEEPALIVE_UNTIL_CLIENT = "1.2.331.0"


@dataclass
class SessionSpec:
    session_id: str
    target: str
    document: ResolvedDocument
    agent_version: str
    container_mode: bool = False
    kms_key_id: str | None = None
    reason: str = ""
    owner: str = ""

    @property
    def needs_handshake(self) -> bool:
        return self.document.session_type in ("Port", "NonInteractiveCommands") or self.kms_key_id is not None


class AgentSession:
    def __init__(
        self,
        spec: SessionSpec,
        *,
        faults: Faults,
        flush_timeout: float,
        reconnect_window: float,
    ) -> None:
        self.spec = spec
        self.reconnect_window = reconnect_window
        self.token = secrets.token_urlsafe(24)
        self.faults = faults
        self.flush_timeout = flush_timeout
        self.started_at = datetime.now(UTC)
        self.status = "Connecting"
        self.client_id = ""
        self.client_version = ""
        self.close_output: str | None = None
        self.connections = 0
        self.channel = DataChannel(
            AGENT, deliver=self._deliver, on_control=lambda _m: None, on_failure=self._on_failure
        )
        self.plugin: Plugin | None = None
        self._plugin_ready = False
        self._handshake_done = not spec.needs_handshake
        self._handshake: asyncio.Future[HandshakeResponse] = asyncio.get_running_loop().create_future()
        self._ws: DirectWebSocketResponse | None = None
        self._abort: Callable[[], None] | None = None
        self._runner: asyncio.Task[None] | None = None
        self.ended = asyncio.Event()
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def session_id(self) -> str:
        return self.spec.session_id

    def new_token(self) -> str:
        self.token = secrets.token_urlsafe(24)
        return self.token

    def describe(self) -> dict[str, Any]:
        return {
            "SessionId": self.session_id,
            "Target": self.spec.target,
            "DocumentName": self.spec.document.name,
            "SessionType": self.spec.document.session_type,
            "Status": self.status,
            "StartDate": self.started_at.isoformat(),
            "Owner": self.spec.owner,
            "Reason": self.spec.reason,
            "Connections": self.connections,
            "Connected": self._ws is not None,
            "Retransmits": self.channel.retransmits,
            "OutOfOrder": self.channel.out_of_order,
            "TerminalSizes": list(self.plugin.sizes) if self.plugin is not None else [],
        }

    # -- websocket -----------------------------------------------------------------------------
    async def serve(
        self, ws: DirectWebSocketResponse, opening: OpenDataChannel, abort: Callable[[], None]
    ) -> None:
        """Run one websocket of this session until it closes (a later one may resume the session)."""
        if self._abort is not None:
            self._abort()
        self._ws, self._abort = ws, abort
        self.connections += 1
        self.status = "Connected"
        self.client_id = opening.client_id
        self.client_version = opening.client_version or self.client_version

        post = websocket_post(ws)
        link = FaultyLink(self.faults, websocket_transport(ws), abort, post)
        self.channel.start()
        writable = None if post is None else lambda: websocket_writable(ws)
        await self.channel.attach(link.send, None if post is None else link.post, writable)
        if self._runner is None:
            self._runner = asyncio.ensure_future(self._run())

        def take(raw: bytes) -> bool:  # in the socket's receive callback: no task hop
            if link.incoming(raw):
                with contextlib.suppress(ConnectionError, OSError):
                    self.channel.feed(raw)
            return True

        ws.take(take)
        try:
            async for msg in ws:  # what was queued before, and control frames
                if msg.type == WSMsgType.BINARY:
                    raw = msg.data
                elif msg.type == WSMsgType.TEXT:
                    raw = msg.data.encode()
                else:
                    continue
                if link.incoming(raw):
                    self.channel.feed(raw)
        except (ConnectionError, OSError):
            pass
        finally:
            if self._ws is ws:
                self.channel.detach()
                self._ws = self._abort = None
                if self.status == "Connected":
                    self.status = "Disconnected"
                    self._background(self._expire_if_abandoned(self.connections))

    async def _expire_if_abandoned(self, connections: int) -> None:
        """Like the service, end a session whose client stays away (its processes would leak)."""
        await asyncio.sleep(self.reconnect_window)
        if self.status == "Disconnected" and self.connections == connections:
            await self.close("the client did not reconnect")

    def drop_connection(self) -> bool:
        """Break the current websocket abruptly (no close frame), as a network failure would."""
        if self._abort is None:
            return False
        self._abort()
        return True

    # -- agent flow ----------------------------------------------------------------------------
    async def _run(self) -> None:
        output = ""
        try:
            if self.spec.needs_handshake:
                await self._perform_handshake()
            else:
                await self._send_publication()
            self.plugin = self._make_plugin()
            if self.faults.start_delay:
                await asyncio.sleep(self.faults.start_delay)
            await self.plugin.start()
            self._plugin_ready = True
            self.channel.redeliver()
            output = await self.plugin.finished
            await self.channel.wait_drained(self.flush_timeout)
        except SessionFailure as exc:
            output = str(exc)
        except (ConnectionError, asyncio.CancelledError):
            output = "session cancelled"
        except Exception as exc:  # a plugin bug must end the session, not leave it hanging
            output = f"agent error: {exc!r}"
        await self.close(output)

    async def _send_publication(self) -> None:
        """The service's start_publication, with a garbage digest as seen live (§4)."""
        message = ClientMessage(
            MessageType.START_PUBLICATION, 0, 0, b"", flags=HeaderFlag.CONTROL, payload_digest=os.urandom(32)
        )
        await self.channel.send_control(encode(message))

    async def _perform_handshake(self) -> None:
        doc = self.spec.document
        properties = (
            doc.properties
            if doc.session_type in ("Port", "NonInteractiveCommands", "InteractiveCommands")
            else None
        )
        kms = self.spec.kms_key_id if doc.session_type != "Port" else None
        request = HandshakeRequest.for_session(self.spec.agent_version, doc.session_type, properties, kms)
        began = time.monotonic_ns()
        await self.channel.send(PayloadType.HANDSHAKE_REQUEST, request.to_json())
        try:
            response = await asyncio.wait_for(asyncio.shield(self._handshake), HANDSHAKE_TIMEOUT)
        except TimeoutError:
            raise SessionFailure("Handshake timed out: no HandshakeResponse within 15 s.") from None
        failed = [a for a in response.actions if a.status != ActionStatus.SUCCESS]
        if failed:
            detail = "; ".join(f"{a.action_type}: {a.error or a.status.name}" for a in failed)
            raise SessionFailure(f"Handshake failed: {detail}")
        if kms is not None:
            raise SessionFailure("KMS encryption is not emulated")
        if response.client_version:
            self.client_version = response.client_version
        complete = HandshakeComplete(time.monotonic_ns() - began, "")
        await self.channel.send(PayloadType.HANDSHAKE_COMPLETE, complete.to_json())
        self._handshake_done = True

    def _make_plugin(self) -> Plugin:
        doc = self.spec.document
        if doc.session_type == "Port":
            props = doc.properties if isinstance(doc.properties, dict) else {}
            host = loopback_address(str(props.get("host", "localhost")))
            try:
                port = int(props.get("portNumber", ""))
            except ValueError:
                raise SessionFailure(f"invalid portNumber {props.get('portNumber')!r}") from None
            local_forwarding = props.get("type") == "LocalPortForwarding"
            if (
                local_forwarding
                and version_gt(self.spec.agent_version, MUX_AFTER_AGENT)
                and version_ge(self.client_version, MUX_MIN_CLIENT)
            ):
                keepalive = not version_gt(self.client_version, SMUX_KEEPALIVE_UNTIL_CLIENT)
                return MuxPortPlugin(self.channel, host, port, keepalive=keepalive)
            return BasicPortPlugin(self.channel, host, port, reconnect=local_forwarding)
        if doc.session_type == "NonInteractiveCommands":
            return CommandPlugin(self.channel, doc.properties)
        command = str(shell_property(doc.properties, "commands", "") or "").strip()
        if not command:
            return PtyPlugin(self.channel, ["sh"])
        if self.spec.container_mode:
            try:
                return PtyPlugin(self.channel, shlex.split(command))
            except ValueError as exc:
                raise SessionFailure(f"Failed to parse commands input: {exc}") from None
        return PtyPlugin(self.channel, ["sh", "-c", command])

    def _deliver(self, message: ClientMessage) -> bool:
        ptype = message.payload_type
        if ptype == PayloadType.HANDSHAKE_RESPONSE:
            with contextlib.suppress(CodecError):
                response = HandshakeResponse.from_json(message.payload)
                if not self._handshake.done():
                    self._handshake.set_result(response)
            return True
        if ptype == PayloadType.ENC_CHALLENGE_RESPONSE or not self._handshake_done:
            return True  # acked and discarded until the handshake completes
        if ptype == PayloadType.FLAG:
            with contextlib.suppress(CodecError):
                if parse_flag(message.payload) == PortFlag.TERMINATE_SESSION:
                    if not self.faults.ignore_terminate_flag:
                        self._background(self.close("terminated by client"))
                    return True
        if self.plugin is None or not self._plugin_ready:
            return False  # ErrHandlerNotReady until the pty / TCP is up: no ack, the client retransmits
        return self.plugin.input(message)

    def _on_failure(self, exc: BaseException) -> None:
        self._background(self.close(str(exc)))

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def close(self, output: str = "") -> None:
        """End the session: stop the plugin, send channel_closed, close the socket."""
        if self.close_output is not None:
            return
        self.close_output = output
        self.status = "Terminated"
        if self.plugin is not None:
            await self.plugin.stop()
        if self._runner is not None and self._runner is not asyncio.current_task():
            self._runner.cancel()
        closed = ChannelClosed(
            message_id=str(uuid.uuid4()),
            created_date=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            destination_id=self.client_id,
            session_id=self.session_id,
            output=output,
        )
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.channel.send_control(
                encode(
                    ClientMessage(
                        MessageType.CHANNEL_CLOSED, 0, 0, closed.to_json(), flags=HeaderFlag.CONTROL
                    )
                )
            )
        self.channel.close()
        self.plugin = None
        self._plugin_ready = False
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        self.ended.set()
