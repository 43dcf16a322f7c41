"""A fault-injecting HTTP proxy on loopback, between boto3 and the S3 server.

``FaultProxy(upstream)`` forwards every request to ``upstream`` unless a fault is set:

* ``"error"``: answer 503 SlowDown without forwarding (botocore retries these);
* ``"timeout"``: hold the request longer than the client waits, then drop it;
* ``"truncate"``: forward, then send only half of the response body and close;
* ``"slow"``: forward, after a delay;
* ``"tamper"``: forward, flipping a byte of every segment or snapshot a GET returns.

``rate`` is the share of requests that get the fault (1.0: all); ``seen`` counts them.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class FaultProxy:
    """Started on 127.0.0.1 at an ephemeral port; ``url`` is its endpoint."""

    def __init__(self, upstream: str, *, seed: int = 0) -> None:
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.fault: str | None = None
        self.rate = 1.0
        self.delay = 0.3
        self.seen = 0
        self.faulted = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:  # quiet
                return

            def _handle(self) -> None:
                proxy.serve(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def set(self, fault: str | None, rate: float = 1.0) -> None:
        with self._lock:
            self.fault, self.rate = fault, rate

    def _pick(self) -> str | None:
        with self._lock:
            self.seen += 1
            if self.fault is not None and self._random.random() < self.rate:
                self.faulted += 1
                return self.fault
            return None

    def serve(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        fault = self._pick()
        if fault == "error":
            payload = b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>"
            request.send_response(503)
            request.send_header("Content-Type", "application/xml")
            request.send_header("Content-Length", str(len(payload)))
            request.end_headers()
            request.wfile.write(payload)
            return
        if fault == "timeout":
            time.sleep(self.delay)
            request.close_connection = True
            return
        if fault == "slow":
            time.sleep(self.delay)
        status, headers, data = self._forward(request, body)
        tampered = request.command == "GET" and request.path.endswith((".seg", ".snap"))
        if fault == "tamper" and tampered and data and status == 200:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        request.send_response(status)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                request.send_header(name, value)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        if request.command == "HEAD":
            return
        if fault == "truncate" and len(data) > 1:
            request.wfile.write(data[: len(data) // 2])
            request.wfile.flush()
            request.close_connection = True
            return
        request.wfile.write(data)

    def _forward(
        self, request: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
            connection.request(request.command, request.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            return response.status, response.getheaders(), data
        finally:
            connection.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
