"""An sshd upstream: one asyncssh client connection shared by all channels of a binding."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh

from sshgate.config import HostKeyPolicy, SshResource
from sshgate.native_secret import NativeCredential, Password, PrivateKey
from sshgate.ssh_algorithms import ENCRYPTION_ALGS
from sshgate.upstream.base import Downstream, ExitSignal, SessionRequest, UpstreamChannel, UpstreamError


def known_hosts_for(policy: HostKeyPolicy) -> Any:
    """Map ``host_key_policy`` to asyncssh's ``known_hosts`` argument."""
    if policy.known_hosts is not None:
        try:
            return asyncssh.read_known_hosts(policy.known_hosts)
        except OSError as exc:
            raise UpstreamError(
                "the upstream's known_hosts file cannot be read; ask an administrator",
                f"cannot read known_hosts file {policy.known_hosts}: {exc.strerror}",
            ) from None
    if policy.host_keys is not None:
        return ([asyncssh.import_public_key(k) for k in policy.host_keys], [], [])
    if policy.host_ca_keys is not None:
        return ([], [asyncssh.import_public_key(k) for k in policy.host_ca_keys], [])
    return None


class _ChannelSession(asyncssh.SSHClientSession[bytes]):
    """Feeds one upstream channel's events to its downstream; one attribute lookup per packet."""

    def __init__(self, downstream: Downstream) -> None:
        self._down = downstream
        self._status: int | None = None
        self._signal: ExitSignal | None = None

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._down.upstream_data(data, datatype == asyncssh.EXTENDED_DATA_STDERR)

    def eof_received(self) -> bool:
        self._down.upstream_eof()
        return True

    def exit_status_received(self, status: int) -> None:
        self._status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self._signal = ExitSignal(signal, core_dumped, msg)

    def pause_writing(self) -> None:
        self._down.pause_reading()

    def resume_writing(self) -> None:
        self._down.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._status is not None or self._signal is not None:
            self._down.upstream_exit(self._status, self._signal)
        self._down.upstream_closed(str(exc) if exc else None)


class _TcpSession(asyncssh.SSHTCPSession[bytes]):
    def __init__(self, downstream: Downstream) -> None:
        self._down = downstream

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._down.upstream_data(data, False)

    def eof_received(self) -> bool:
        self._down.upstream_eof()
        return True

    def pause_writing(self) -> None:
        self._down.pause_reading()

    def resume_writing(self) -> None:
        self._down.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._down.upstream_closed(str(exc) if exc else None)


class SshChannel:
    """:class:`UpstreamChannel` over an asyncssh client channel."""

    def __init__(self, channel: asyncssh.SSHClientChannel[bytes] | asyncssh.SSHTCPChannel[bytes]) -> None:
        self._chan = channel
        self.write = channel.write
        self.write_eof = channel.write_eof
        self.pause_reading = channel.pause_reading
        self.resume_reading = channel.resume_reading
        self.close = channel.close

    def resize(self, cols: int, rows: int, width: int, height: int) -> None:
        if isinstance(self._chan, asyncssh.SSHClientChannel):
            self._chan.change_terminal_size(cols, rows, width, height)

    def send_signal(self, name: str) -> None:
        if isinstance(self._chan, asyncssh.SSHClientChannel):
            self._chan.send_signal(name)


class SshUpstream:
    kind = "ssh"

    def __init__(
        self, conn: asyncssh.SSHClientConnection, cleanup: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        self._conn = conn
        self._cleanup = cleanup

    async def open_session(self, request: SessionRequest, downstream: Downstream) -> UpstreamChannel:
        command = request.command
        env: dict[bytes | str, bytes | str] = {k: v for k, v in request.env.items()}
        if request.kind == "shell" and request.shell:
            command = request.shell
        if request.agent_path is not None:
            self._forward_agent(request.agent_path)
        try:
            chan, _ = await self._conn.create_session(
                lambda: _ChannelSession(downstream),
                command=command,
                subsystem=request.subsystem,
                env=env,
                term_type=request.term_type,
                term_size=request.term_size,
                term_modes=request.term_modes,
                request_pty=request.pty,
                encoding=None,
            )
        except asyncssh.ChannelOpenError as exc:
            raise UpstreamError(f"upstream refused the session: {exc.reason}") from None
        except (OSError, asyncssh.Error) as exc:
            raise UpstreamError(f"upstream session failed: {_reason(exc)}") from None
        return SshChannel(chan)

    def _forward_agent(self, path: str) -> None:
        """Send the upstream's agent requests to the client's forwarded agent at ``path``.

        asyncssh fixes agent forwarding when a connection is made, but a binding connects before
        the client asks for its agent, so the path is set on the live connection: from now on each
        session requests forwarding and each agent channel the sshd opens is relayed to ``path``.
        """
        self._conn._agent_forward_path = path

    async def open_tcp(self, host: str, port: int, downstream: Downstream) -> UpstreamChannel:
        try:
            chan, _ = await self._conn.create_connection(
                lambda: _TcpSession(downstream), host, port, encoding=None
            )
        except asyncssh.ChannelOpenError as exc:
            raise UpstreamError(f"cannot reach {host}:{port} from the resource: {exc.reason}") from None
        except (OSError, asyncssh.Error) as exc:
            raise UpstreamError(f"forward to {host}:{port} failed: {_reason(exc)}") from None
        return SshChannel(chan)

    async def close(self) -> None:
        self._conn.close()
        await self._conn.wait_closed()
        if self._cleanup is not None:
            await self._cleanup()


def _reason(exc: BaseException) -> str:
    """A failure's cause without addresses (asyncio's OSError texts name the host and port)."""
    if isinstance(exc, asyncssh.Error):
        return exc.reason
    if isinstance(exc, socket.gaierror):
        return "host name not found"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return type(exc).__name__


async def connect_ssh(resource: SshResource, username: str, credential: NativeCredential) -> SshUpstream:
    """Log in to an ssh resource's sshd as ``username``."""
    return await ssh_login(
        resource.name,
        resource.host_key_policy,
        username,
        credential,
        resource.connect_timeout_s,
        host=resource.hostname,
        port=resource.port,
    )


async def ssh_login(
    name: str,
    host_key_policy: HostKeyPolicy,
    username: str,
    credential: NativeCredential,
    timeout: float,
    *,
    host: str,
    port: int,
    sock: socket.socket | None = None,
    cleanup: Callable[[], Awaitable[None]] | None = None,
) -> SshUpstream:
    """Log in to an sshd (over ``sock`` when given) for the resource ``name``; every failure
    becomes one readable line naming the resource, and its address goes to the audit detail."""
    where = f"{name} ({host}:{port}{', through SSM' if sock is not None else ''})"
    options: dict[str, Any] = {}
    if isinstance(credential, Password):
        options["password"] = credential.password
        options["client_keys"] = None
        options["preferred_auth"] = "password,keyboard-interactive"
        options["kbdint_auth"] = True
    elif isinstance(credential, PrivateKey):
        key: Any = (credential.key, credential.certificate) if credential.certificate else credential.key
        options["client_keys"] = [key]
        options["preferred_auth"] = "publickey"
    else:
        raise UpstreamError(f"the native secret of {username} on {name} is not usable for SSH")
    if sock is not None:
        options["sock"] = sock
    try:
        # asyncio.timeout, not wait_for: a cancelled wait_for can drop a connection that completed
        # at that moment; here the cancellation reaches asyncssh, which closes what it opened.
        async with asyncio.timeout(timeout):
            conn = await asyncssh.connect(
                host,
                port,
                username=username,
                known_hosts=known_hosts_for(host_key_policy),
                agent_path=None,
                config=None,
                encryption_algs=ENCRYPTION_ALGS,
                compression_algs=None,
                keepalive_interval=30,
                **options,
            )
    except TimeoutError:
        raise UpstreamError(
            f"upstream {name} did not answer within {timeout:g} s", f"{where}: no answer in {timeout:g} s"
        ) from None
    except asyncssh.HostKeyNotVerifiable as exc:
        raise UpstreamError(
            f"upstream {name} presented a host key that does not match its host_key_policy",
            f"{where}: {exc.reason}",
        ) from None
    except asyncssh.PermissionDenied as exc:
        raise UpstreamError(
            f"upstream {name} refused the login of native user {username}", f"{where}: {exc.reason}"
        ) from None
    except (OSError, asyncssh.Error) as exc:
        raise UpstreamError(f"cannot connect to upstream {name}: {_reason(exc)}", f"{where}: {exc}") from None
    return SshUpstream(conn, cleanup)
