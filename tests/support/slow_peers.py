"""Slow real peers on loopback, to hold a gateway inside a chosen step of session setup: an
upstream that accepts and never speaks, one that speaks only after a delay, and an OPA server
that answers after a delay."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.tcp import serve_tcp


@contextmanager
def stalling_upstream() -> Iterator[int]:
    """Accepts TCP connections and never sends an SSH banner."""

    def hold(conn: socket.socket, stop: threading.Event) -> None:
        stop.wait()

    with serve_tcp(hold) as port:
        yield port


@contextmanager
def delayed_proxy(target_port: int, delay_s: float) -> Iterator[int]:
    """Accepts, waits ``delay_s``, then relays to ``127.0.0.1:target_port`` both ways."""

    def relay(conn: socket.socket, stop: threading.Event) -> None:
        if stop.wait(delay_s):
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", target_port), timeout=5)
        except OSError:
            return
        upstream.settimeout(None)

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        back = threading.Thread(target=pump, args=(upstream, conn), daemon=True)
        back.start()
        pump(conn, upstream)
        back.join(timeout=10)
        upstream.close()

    with serve_tcp(relay) as port:
        yield port


@contextmanager
def slow_opa(delays: Mapping[str, float]) -> Iterator[str]:
    """An OPA Data API that allows everything, after ``delays[resource name]`` seconds (else at
    once). HTTP/1.0: each answer closes its connection, so the gateway keeps no pooled sockets."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            doc: dict[str, Any] = json.loads(body or b"{}")
            resource = (doc.get("input") or {}).get("resource") or {}
            time.sleep(delays.get(str(resource.get("name")), 0.0))
            answer = json.dumps({"result": {"action": "allow"}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=2)
