"""A real HTTP server on 127.0.0.1 for the download tests (no network mocks).

It honours `Range`, can ignore it, and can cut the connection after N bytes to simulate
an interrupted transfer; ``files`` maps request paths to bytes, ``requests`` records each
request (path, range, status, bytes sent).
"""

from __future__ import annotations

import contextlib
import http.server
import re
import socket
import threading
from collections.abc import Iterator


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        srv: _Server = self.server  # type: ignore[assignment]
        data = srv.files.get(self.path)
        rng = self.headers.get("Range")
        record = {"path": self.path, "range": rng, "status": None, "sent": 0}
        srv.requests.append(record)
        if data is None:
            record["status"] = 404
            self.send_error(404, "not here")
            return
        start = 0
        status = 200
        if rng and srv.honour_range:
            match = re.fullmatch(r"bytes=(\d+)-", rng)
            assert match, rng
            start = int(match.group(1))
            if start >= len(data):
                record["status"] = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        record["status"] = status
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        cut = srv.cut_after.pop(0) if srv.cut_after else None
        if cut is not None and cut < len(body):
            record["sent"] = cut  # before writing: the client may finish first
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True  # hang up mid-body: the client sees a short read
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        record["sent"] = len(body)
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.requests: list[dict] = []
        self.cut_after: list[int] = []
        self.honour_range = True

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def reset(self) -> None:
        self.requests.clear()
        self.cut_after.clear()
        self.honour_range = True


@contextlib.contextmanager
def serving() -> Iterator[_Server]:
    """A running server for the block."""
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
