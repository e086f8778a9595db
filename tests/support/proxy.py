"""A TCP load balancer in miniature: forwards loopback connections to the gateway, each
preceded by a PROXY header (v1 or v2) naming a client address of the test's choosing."""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from sshgate.proxy_header import V2_SIGNATURE
from tests.support.tcp import serve_tcp


def v1_header(client: tuple[str, int], server: tuple[str, int] = ("127.0.0.1", 2222)) -> bytes:
    family = "TCP4" if ipaddress.ip_address(client[0]).version == 4 else "TCP6"
    return f"PROXY {family} {client[0]} {server[0]} {client[1]} {server[1]}\r\n".encode()


def v2_header(
    client: tuple[str, int] | None, server: tuple[str, int] = ("127.0.0.1", 2222), tlv: bytes = b""
) -> bytes:
    if client is None:  # LOCAL: the balancer's own health check
        return V2_SIGNATURE + struct.pack("!BBH", 0x20, 0x00, len(tlv)) + tlv
    src, dst = ipaddress.ip_address(client[0]), ipaddress.ip_address(server[0])
    if src.version == 4:
        family, dst_packed = 0x11, ipaddress.IPv4Address(dst).packed if dst.version == 4 else bytes(4)
    else:
        family, dst_packed = 0x21, ipaddress.IPv6Address(int(dst)).packed
    body = src.packed + dst_packed + struct.pack("!HH", client[1], server[1]) + tlv
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, family, len(body)) + body


@contextmanager
def proxy(target_port: int, header: bytes) -> Iterator[int]:
    """Listen on 127.0.0.1; each connection gets ``header`` then is spliced to the target."""

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def serve(client: socket.socket, _stop: object) -> None:
        upstream = socket.create_connection(("127.0.0.1", target_port), timeout=10)
        upstream.settimeout(None)
        client.settimeout(None)
        upstream.sendall(header)
        threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
        pipe(upstream, client)
        client.close()
        upstream.close()

    with serve_tcp(serve) as port:
        yield port
