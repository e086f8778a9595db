"""EC2 instances and ECS containers as upstreams, through SSM sessions (no plugin binary).

* EC2, PTY shell: the default shell document (Standard_Stream), or AWS-StartInteractiveCommand
  for ``--shell`` and for commands run with a terminal. Exec without a terminal: the resource's
  ``command_document`` (NonInteractiveCommands with
  separate stdout, stderr and exit code; ``deploy/ssm/`` ships it). SSM gives such commands no
  stdin: data the client sends is not delivered, and the client is told so (:class:`StdinlessPump`).
* Shells without a terminal (``ssh -T host``, VSCode's ``bash``; EC2 and ECS): a
  :class:`PipedShell` over AWS-StartInteractiveCommand or ECS Exec, byte-clean with stdin EOF
  and exit status.
* ECS: ECS Exec is interactive only. A shell is the resource's (or ``--shell``) program; an exec
  command without a terminal is a :class:`PipedShell` of ``sh -c COMMAND`` (stdin and EOF carried);
  one with a terminal runs in it and prints a random marker with ``$?`` last, which
  :class:`ExitMarker` strips and turns into the exit status.
* EC2 with ``ssh:``: full SSH to the instance's sshd, tunnelled through an AWS-StartSSHSession
  port session (:func:`ssh_through_ssm`); then everything an sshd offers works, stdin included.
* ``direct-tcpip``: one mux port session per distinct target, shared by the connection's channels
  (AWS-StartPortForwardingSession for localhost, ...ToRemoteHost otherwise).
Every SSM session a connection opened is terminated when the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar, Unpack

import aiohttp

from sshgate.aws.clients import AwsClients, Credentials
from sshgate.aws.errors import AwsError
from sshgate.aws.instance_connect import push_instance_connect_key
from sshgate.aws.targets import Ec2Target, EcsTarget
from sshgate.config import Ec2Resource, EcsResource
from sshgate.native_secret import AmbientIam, AssumeRole, NativeCredential
from sshgate.ssm.client import (
    AgentProtocolError,
    CommandSession,
    ConnectOptions,
    PortSession,
    Session,
    ShellSession,
    SsmSessionError,
    StreamTarget,
    open_command,
    open_port,
    open_shell,
)
from sshgate.ssm.control import SsmControl
from sshgate.upstream.base import Downstream, SessionRequest, UpstreamChannel, UpstreamError
from sshgate.upstream.ssh import SshUpstream, ssh_login
from sshgate.upstream.ssm_relay import (
    SIGNAL_BYTES,
    Chunk,
    ExitMarker,
    PipedShell,
    SessionPump,
    StdinlessPump,
)

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish"})
READY_TIMEOUT = 30.0
_S = TypeVar("_S", bound=Session)


class SsmUpstream:
    kind = "ssm"

    def __init__(
        self,
        clients: AwsClients,
        resource: Ec2Resource | EcsResource,
        target: Ec2Target | EcsTarget,
        credentials: Credentials | None,
    ) -> None:
        self._resource = resource
        self._target = target
        self._ssm = clients.client("ssm", resource.region, credentials)
        self._ecs = (
            clients.client("ecs", resource.region, credentials) if isinstance(target, EcsTarget) else None
        )
        self._control = SsmControl(self._ssm, self._ecs, subject=resource.name)
        self._http = aiohttp.ClientSession()
        self._sessions: list[Session] = []
        self._ports: dict[tuple[str, int], asyncio.Task[PortSession]] = {}
        self._terminating: set[asyncio.Task[None]] = set()

    async def _connect(
        self,
        opener: Callable[..., Awaitable[_S]],
        start: Awaitable[StreamTarget],
        **options: Unpack[ConnectOptions],
    ) -> _S:
        """Start an SSM session and connect to it. One started but never connected (the client's
        channel closed meanwhile, or the connect failed) is terminated on the service, not left
        running until its command ends."""
        starting = asyncio.ensure_future(start)
        try:
            started = await asyncio.shield(starting)  # StartSession runs to its end in its thread
        except asyncio.CancelledError:
            starting.add_done_callback(self._terminate_if_started)
            raise
        # Kept for close(); a long-lived connection runs session after session, so drop ended ones.
        self._sessions = [s for s in self._sessions if not s.closed]
        try:
            session = await self._open(opener, started, **options)
        except BaseException:
            self._terminate(started.session_id)
            raise
        self._sessions.append(session)
        return session

    async def _open(
        self, opener: Callable[..., Awaitable[_S]], started: StreamTarget, **options: Unpack[ConnectOptions]
    ) -> _S:
        """Connect to a started session; its failures as the client reads them."""
        try:
            return await opener(started, control=self._control, http=self._http, **options)
        except AgentProtocolError as exc:
            raise UpstreamError(_violation_text(self._resource.name, exc)) from None
        except (SsmSessionError, aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(f"SSM session to {self._resource.name} failed: {exc}") from None

    def _terminate_if_started(self, starting: asyncio.Future[StreamTarget]) -> None:
        if not starting.cancelled() and starting.exception() is None:
            self._terminate(starting.result().session_id)

    def _terminate(self, session_id: str) -> None:
        """TerminateSession in the background (kept until done; ``close`` waits for it)."""

        async def terminate() -> None:
            with contextlib.suppress(Exception):  # the session may be gone already
                await self._control.terminate(session_id)

        task = asyncio.get_running_loop().create_task(terminate())
        self._terminating.add(task)
        task.add_done_callback(self._terminating.discard)

    async def _start(self, document: str | None, parameters: dict[str, list[str]] | None) -> StreamTarget:
        try:
            return await self._control.start_session(self._target.target, document, parameters)
        except AwsError as exc:
            raise UpstreamError(str(exc)) from None

    async def _exec_ecs(self, command: str) -> StreamTarget:
        assert isinstance(self._target, EcsTarget)
        target = self._target
        try:
            return await self._control.execute_command(
                target.cluster, target.task_id, command, target.facts.container_name
            )
        except AwsError as exc:
            raise UpstreamError(str(exc)) from None

    async def open_session(self, request: SessionRequest, downstream: Downstream) -> UpstreamChannel:
        if request.kind == "subsystem":
            raise UpstreamError(
                f"subsystem {request.subsystem} is not available on {self._resource.name} (SSM)"
            )
        size = (request.term_size[0], request.term_size[1]) if request.term_size else None
        if program := self._piped_program(request):
            return await self._piped_shell(program, downstream)
        if isinstance(self._target, EcsTarget):
            return await self._open_ecs(request, downstream, size)
        if request.kind == "exec" and request.command is not None and not request.pty:
            assert isinstance(self._resource, Ec2Resource)
            start = self._start(self._resource.command_document, {"command": [request.command]})
            session = await self._connect(open_command, start)
            return _command_pump(session, downstream, self._resource.name)
        interactive = request.command if request.kind == "exec" else request.shell
        if interactive:
            # A command with a terminal (ssh -t host top) is interactive: it needs stdin.
            start = self._start("AWS-StartInteractiveCommand", {"command": [interactive]})
        else:
            start = self._start(None, None)
        shell = await self._connect(open_shell, start, size=size or (80, 24), no_handshake=True)
        return _shell_pump(shell, downstream, None, self._resource.name)

    def _piped_program(self, request: SessionRequest) -> str | None:
        """The shell to run without a terminal (VSCode's ``bash``, ``ssh -T host``), if that is asked."""
        if request.pty:
            return None
        if request.kind == "exec":
            command = request.command or ""
            if isinstance(self._target, EcsTarget) and command and stdin_shell(command) is None:
                # ECS Exec only offers a pty: piped, a command gets its stdin byte for byte and EOF.
                return f"sh -c {shlex.quote(command)}"
            return stdin_shell(command)
        return request.shell or (self._resource.shell if isinstance(self._resource, EcsResource) else "sh")

    async def _piped_shell(self, program: str, downstream: Downstream) -> UpstreamChannel:
        piped = PipedShell(program)
        if isinstance(self._target, EcsTarget):
            start = self._exec_ecs(piped.command)
        else:
            start = self._start("AWS-StartInteractiveCommand", {"command": [piped.command]})
        shell = await self._connect(open_shell, start, no_handshake=True)
        try:
            first = await asyncio.wait_for(piped.wait_ready(shell.read), READY_TIMEOUT)
        except (ConnectionError, TimeoutError) as exc:
            if shell.violation is not None:
                raise UpstreamError(_violation_text(self._resource.name, shell.violation)) from None
            raise UpstreamError(f"the shell on {self._resource.name} did not start: {exc}") from None
        return _shell_pump(shell, downstream, piped.exit, self._resource.name, piped=piped, first=first)

    async def _open_ecs(
        self, request: SessionRequest, downstream: Downstream, size: tuple[int, int] | None
    ) -> UpstreamChannel:
        assert isinstance(self._resource, EcsResource)
        marker = None
        if request.kind == "exec" and request.command is not None:
            marker = ExitMarker()
            command = marker.wrap(request.command)
        else:
            command = request.shell or self._resource.shell
        session = await self._connect(
            open_shell, self._exec_ecs(command), size=size or (80, 24), no_handshake=True
        )
        return _shell_pump(session, downstream, marker, self._resource.name)

    async def _port_session(self, host: str, port: int) -> PortSession:
        if host in LOCAL_HOSTS:
            document, parameters = "AWS-StartPortForwardingSession", {"portNumber": [str(port)]}
        else:
            document = "AWS-StartPortForwardingSessionToRemoteHost"
            parameters = {"host": [host], "portNumber": [str(port)]}
        return await self._connect(open_port, self._start(document, parameters))

    async def open_tcp(self, host: str, port: int, downstream: Downstream) -> UpstreamChannel:
        key = (host, port)
        task = self._ports.get(key)
        if task is None or (task.done() and (task.exception() or task.result().closed)):
            task = self._ports[key] = asyncio.get_running_loop().create_task(self._port_session(host, port))
        try:
            session = await asyncio.shield(task)
            stream = await session.open_stream()
        except (SsmSessionError, ConnectionError) as exc:
            raise UpstreamError(
                f"cannot open a stream to {host}:{port} on {self._resource.name}: {exc}"
            ) from None

        async def read() -> Chunk | None:
            data = await stream.read(65536)
            return (data, False) if data else None

        return SessionPump(downstream, read, stream.write, stream.close)

    async def close(self) -> None:
        for session in self._sessions:
            with contextlib.suppress(Exception):
                await session.close()
        if self._terminating:
            await asyncio.wait(set(self._terminating))
        await self._http.close()


def _command_pump(session: CommandSession, downstream: Downstream, resource: str) -> SessionPump:
    async def read() -> Chunk | None:
        output = await session.read()
        return None if output is None else (output.data, output.stream == "stderr")

    notice = (
        f"sshgate: {resource} runs commands through SSM without stdin; the input was not delivered "
        "(give the resource an ssh: section for scp, rsync and commands that read stdin)\n"
    ).encode()
    return StdinlessPump(
        notice,
        downstream,
        read,
        session.write,
        session.close,
        lambda: session.exit_code,
        missing_status=_missing_status(resource),
        broken=_broken(session, resource),
    )


def _violation_text(resource: str, violation: AgentProtocolError) -> str:
    return f"the SSM agent on {resource} sent a malformed {violation.what}; the session was ended"


def _broken(session: Session, resource: str) -> Callable[[], tuple[bytes, str] | None]:
    """The client's line and the audit reason once the agent broke the protocol (else None)."""

    def broken() -> tuple[bytes, str] | None:
        violation = session.violation
        if violation is None:
            return None
        line = f"sshgate: {_violation_text(resource, violation)}\n"
        return line.encode(), f"SSM session {session.session_id}: {violation}"

    return broken


def _missing_status(resource: str) -> bytes:
    return (
        f"sshgate: the SSM session on {resource} closed before the command's exit status arrived; "
        "its output may be incomplete\n"
    ).encode()


def stdin_shell(command: str) -> str | None:
    """The command, re-quoted, if it starts a shell that reads its commands from stdin
    (``bash``, ``/bin/sh -l``, ``bash -s arg``; not ``bash -c ...`` or ``bash script.sh``)."""
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    if not argv or os.path.basename(argv[0]) not in SHELLS:
        return None
    from_stdin = False
    for arg in argv[1:]:
        if arg.startswith("--"):
            continue
        if arg[:1] in ("-", "+"):
            if "c" in arg[1:]:
                return None
            from_stdin = from_stdin or "s" in arg[1:]
        elif not from_stdin:
            return None
    return shlex.join(argv)


def _shell_pump(
    session: ShellSession,
    downstream: Downstream,
    marker: ExitMarker | None,
    resource: str,
    *,
    piped: PipedShell | None = None,
    first: bytes = b"",
) -> SessionPump:
    """Relay a pty session; with ``piped`` it is a terminal-less shell (see :class:`PipedShell`)
    whose output starts with ``first``."""
    pending = [first] if first else []
    shape = marker.feed if marker is not None else bytes

    async def read() -> Chunk | None:
        data = pending.pop() if pending else await session.read()
        if data:
            return shape(data), False
        rest = marker.flush() if marker is not None else b""
        return (rest, False) if rest else None

    def finish() -> int | None:
        # Shells carry no exit status over SSM; one that ended without error exited, so 0.
        if marker is not None:
            return marker.status
        return None if session.close_reason else 0

    async def eof() -> None:
        if piped is None:
            await session.write(b"\x04")
        else:
            await session.resize(*piped.EOF_SIZE)

    missing = _missing_status(resource) if marker is not None else None
    # A piped shell's only resize is its EOF, and a byte standing for a signal would be data.
    pump = SessionPump(
        downstream,
        read,
        session.write,
        session.close,
        finish,
        eof,
        session.resize if piped is None else None,
        signals=SIGNAL_BYTES if piped is None else {},
        missing_status=missing,
        broken=_broken(session, resource),
        write_now=session.write_now,
    )
    # Output the reader task has not taken yet (``first``, or queued while paused) goes first.
    session.push(lambda data: not pending and pump.offer((shape(data), False)))
    return pump


async def ssh_through_ssm(
    clients: AwsClients,
    resource: Ec2Resource,
    target: Ec2Target,
    credentials: Credentials | None,
    username: str,
    credential: NativeCredential,
) -> SshUpstream:
    """SSH to the instance over an SSM stdio port session bridged to a local socket pair."""
    assert resource.ssh is not None
    settings = resource.ssh
    if settings.host_key_policy is None:
        raise UpstreamError(f"{resource.name}: set ssh.host_key_policy to check the instance's host key")
    user = settings.user or username
    if isinstance(credential, AmbientIam | AssumeRole):
        if not settings.instance_connect:
            raise UpstreamError(f"{resource.name}: an 'iam' native user needs ssh.instance_connect: true")
        credential = await push_instance_connect_key(
            clients, resource.name, target.facts.instance_id, resource.region, credentials, user
        )
    control = SsmControl(clients.client("ssm", resource.region, credentials), subject=resource.name)
    http = aiohttp.ClientSession()
    starting = asyncio.ensure_future(
        control.start_session(
            target.target,
            "AWS-StartSSHSession",
            {"portNumber": [str(settings.port)]},
            doing=f"starting an SSH session on {resource.name}",
        )
    )
    started: StreamTarget | None = None
    try:
        started = await asyncio.shield(starting)  # StartSession runs to its end in its thread
        session = await open_port(started, control=control, http=http)
        stream = await session.open_stream()
    except BaseException as exc:  # a failure, or the client gone: end what was started
        try:
            if started is None and not starting.done():
                with contextlib.suppress(Exception):
                    started = await starting
            if started is not None:
                with contextlib.suppress(Exception):
                    await control.terminate(started.session_id)
        finally:
            await http.close()
        if isinstance(exc, AwsError | SsmSessionError | aiohttp.ClientError | TimeoutError):
            raise UpstreamError(f"cannot reach the sshd of {resource.name} through SSM: {exc}") from None
        raise
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    loop = asyncio.get_running_loop()

    async def to_socket() -> None:
        while data := await stream.read(65536):
            await loop.sock_sendall(theirs, data)
        theirs.shutdown(socket.SHUT_WR)

    async def from_socket() -> None:
        while data := await loop.sock_recv(theirs, 65536):
            await stream.write(data)

    pumps = [loop.create_task(to_socket()), loop.create_task(from_socket())]

    async def cleanup() -> None:
        for pump in pumps:
            pump.cancel()
        with contextlib.suppress(Exception):
            await session.close()
        theirs.close()
        await http.close()

    try:
        return await ssh_login(
            resource.name,
            settings.host_key_policy,
            user,
            credential,
            15.0,
            host=target.target,
            port=settings.port,
            sock=ours,
            cleanup=cleanup,
        )
    except BaseException:  # refused, or the client gone during the SSH handshake
        await cleanup()
        raise
