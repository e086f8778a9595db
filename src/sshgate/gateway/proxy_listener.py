"""The SSH listener behind a TCP load balancer: read the PROXY header, then hand the connection
to asyncssh with the client's address as its peer (docs/operations.md, "Replicas").

asyncssh accepts any object with ``create_server`` as a listen ``tunnel``; this one listens
itself and creates asyncssh's connection only once a header from a trusted proxy was read.
The connection then talks to the socket directly (``set_protocol``), so after the header
nothing is in between but a transport wrapper that answers ``peername`` with the client and
``sockname`` with the address the client connected to (what ``formal ssh-config`` names).
A sender outside ``trusted_proxies``, a malformed, oversized or slow header is dropped before
any SSH state exists, so it costs no per-source budget, neither the proxy's nor a client's.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Sequence
from typing import Any, cast

from sshgate import audit
from sshgate.proxy_header import MAX_HEADER, ProxyHeaderError, parse, plain_address

# A balancer sends its header with the connection's first segment.
HEADER_TIMEOUT_S = 3.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class _HeaderAddressed(asyncio.Transport):
    """The accepted transport, with the PROXY header's client as ``peername`` and its destination
    as ``sockname`` (the socket's own when the header has none)."""

    def __init__(
        self, inner: asyncio.Transport, client: tuple[str, int], destination: tuple[str, int] | None
    ) -> None:
        super().__init__()
        self._inner = inner
        self._client = client
        self._destination = destination

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._client
        if name == "sockname" and self._destination is not None:
            return self._destination
        if name == "proxy_peername":
            return self._inner.get_extra_info("peername", default)
        return self._inner.get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview[Any]) -> None:
        self._inner.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self._inner.writelines(list_of_data)

    def write_eof(self) -> None:
        self._inner.write_eof()

    def can_write_eof(self) -> bool:
        return self._inner.can_write_eof()

    def close(self) -> None:
        self._inner.close()

    def abort(self) -> None:
        self._inner.abort()

    def is_closing(self) -> bool:
        return self._inner.is_closing()

    def pause_reading(self) -> None:
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._inner.resume_reading()

    def is_reading(self) -> bool:
        return self._inner.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._inner.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._inner.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._inner.get_write_buffer_limits()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._inner.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._inner.get_protocol()


def trusted(peer: str, networks: Sequence[Network]) -> bool:
    try:
        address = ipaddress.ip_address(plain_address(ipaddress.ip_address(peer)))
    except ValueError:
        return False
    return any(address in network for network in networks)


class _HeaderReader(asyncio.Protocol):
    def __init__(self, listener: ProxyProtocolListener, factory: Callable[[str, int], Any]) -> None:
        self._listener = listener
        self._factory = factory
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._peer = ""
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if peer else ""
        listener = self._listener
        if not trusted(self._peer, listener.networks):
            self._drop("the sender is not in listen.trusted_proxies")
            return
        if listener.pending >= listener.max_pending:
            self._drop("too many connections waiting for their PROXY header")
            return
        listener.pending += 1
        self._timer = asyncio.get_running_loop().call_later(
            listener.timeout_s, self._drop, "no complete PROXY header in time"
        )

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            header = parse(self._buffer[:MAX_HEADER])
            if header is None and len(self._buffer) >= MAX_HEADER:
                raise ProxyHeaderError(f"no PROXY header within {MAX_HEADER} bytes")
        except ProxyHeaderError as exc:
            self._drop(str(exc))
            return
        if header is None or self._transport is None:
            return
        self._done()
        transport, rest = self._transport, self._buffer[header.length :]
        self._transport, self._buffer = None, b""
        peer = transport.get_extra_info("peername")
        client = header.client or (self._peer, int(peer[1]) if peer else 0)
        conn = self._factory("", 0)
        transport.set_protocol(conn)
        conn.connection_made(_HeaderAddressed(transport, client, header.destination))
        if rest:
            conn.data_received(rest)

    def connection_lost(self, exc: Exception | None) -> None:
        self._done()
        self._transport = None

    def _done(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._listener.pending -= 1

    def _drop(self, reason: str) -> None:
        self._done()
        if self._transport is not None:
            self._listener.log.warning("connection.dropped", proxy_ip=self._peer, reason=reason)
            self._transport.abort()
            self._transport = None


class ProxyProtocolListener:
    """Passed to ``asyncssh.create_server(tunnel=...)`` when ``listen.proxy_protocol`` is on."""

    def __init__(
        self,
        networks: Sequence[Network],
        max_pending: int,
        reuse_port: bool,
        timeout_s: float = HEADER_TIMEOUT_S,
    ) -> None:
        self.networks = list(networks)
        self.max_pending = max_pending
        self.reuse_port = reuse_port
        self.timeout_s = timeout_s
        self.pending = 0
        self.log = audit.logger()

    async def create_server(
        self, session_factory: Callable[[str, int], Any], listen_host: str, listen_port: int
    ) -> asyncio.Server:
        return await asyncio.get_running_loop().create_server(
            lambda: _HeaderReader(self, session_factory),
            listen_host,
            listen_port,
            family=socket.AF_UNSPEC,
            reuse_port=self.reuse_port or None,
            backlog=1024,
        )
