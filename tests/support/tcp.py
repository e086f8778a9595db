"""Small real TCP peers: an echo server on loopback and a SOCKS5 client (RFC 1928, no auth)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def serve_tcp(serve: Callable[[socket.socket, threading.Event], None]) -> Iterator[int]:
    """A TCP listener on 127.0.0.1 running ``serve(conn, stop)`` in a thread per connection;
    yields its port. When the block ends ``stop`` is set and every connection is shut down."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.settimeout(0.2)
    stop = threading.Event()
    accepted: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)
            thread = threading.Thread(target=serve, args=(conn, stop), daemon=True)
            threads.append(thread)
            thread.start()

    acceptor = threading.Thread(target=accept_loop, daemon=True)
    acceptor.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        acceptor.join(timeout=2)
        listener.close()
        for conn in accepted:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked reading it
            conn.close()
        for thread in threads:
            thread.join(timeout=2)


@contextmanager
def echo_server() -> Iterator[int]:
    """A threaded TCP echo server on 127.0.0.1; yields its port and stops on exit."""

    def echo(conn: socket.socket, stop: threading.Event) -> None:
        with contextlib.suppress(OSError), conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    with serve_tcp(echo) as port:
        yield port


def socks5_connect(proxy_port: int, host: str, port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout)
    sock.sendall(b"\x05\x01\x00")
    if sock.recv(2) != b"\x05\x00":
        raise OSError("SOCKS5 proxy refused the no-auth method")
    name = host.encode()
    sock.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack(">H", port))
    reply = recv_exact(sock, 4)
    if reply[1] != 0:
        raise OSError(f"SOCKS5 connect failed with code {reply[1]}")
    skip = {1: 4, 4: 16}.get(reply[3])
    if skip is None:
        skip = recv_exact(sock, 1)[0]
    recv_exact(sock, skip + 2)
    return sock


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data
