"""A real threaded HTTP server on 127.0.0.1 that serves good images and every failure a fetch must survive."""

from __future__ import annotations

import collections
import io
import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


def sample_jpeg(size=(64, 48), colour=(200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def closed_port() -> int:
    """A loopback port with nothing listening (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, fmt, *args):  # keep test output quiet
        pass

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        self.server.fault.count(path, self.headers.get("Host"))
        route = getattr(self, "_route_" + path.strip("/").replace(".", "_").replace("-", "_"), None)
        try:
            if route is None:
                self._send(404, b"no such route")
            else:
                route()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test); nothing to answer

    def _send(self, code: int, body: bytes, ctype: str = "application/octet-stream", length=None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def _route_ok_jpg(self):
        self._send(200, self.server.fault.jpeg, "image/jpeg")

    def _route_404(self):
        self._send(404, b"not found")

    def _route_500(self):
        self._send(500, b"server error")

    def _route_flaky(self):
        if self.server.fault.hits["/flaky"] <= self.server.fault.flaky_failures:
            self._send(500, b"try again")
        else:
            self._send(200, self.server.fault.jpeg, "image/jpeg")

    def _route_slow(self):
        self.server.fault.stop.wait(self.server.fault.slow_s)
        self._send(200, self.server.fault.jpeg, "image/jpeg")

    def _route_slow_body(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.server.fault.jpeg)))
        self.end_headers()
        self.wfile.write(self.server.fault.jpeg[:10])
        self.wfile.flush()
        self.server.fault.stop.wait(self.server.fault.slow_s)

    def _route_drip(self):
        """Sends a byte every drip_s: each read is fast, the whole download is not."""
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        for _ in range(1000):
            if self.server.fault.stop.wait(self.server.fault.drip_s):
                return
            self.wfile.write(b"x")
            self.wfile.flush()

    def _route_big(self):
        self._send(200, b"x" * self.server.fault.big_bytes, "image/jpeg")

    def _route_big_chunked(self):
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b"y" * 1024
        for _ in range(self.server.fault.big_bytes // 1024 + 1):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")

    def _route_truncated_jpg(self):
        self._send(200, self.server.fault.jpeg[: len(self.server.fault.jpeg) // 2], "image/jpeg")

    def _route_text(self):
        self._send(200, b"hello, I am not an image", "text/plain")

    def _route_empty(self):
        self._send(200, b"", "image/jpeg")

    def _route_redirect_ok(self):
        self._redirect("/ok.jpg")

    def _route_redirect_away(self):
        """Redirects to `fault.redirect_to` (another server, an internal address, another scheme)."""
        self._redirect(self.server.fault.redirect_to)

    def _route_redirect_loop(self):
        self._redirect("/redirect-loop")

    def _redirect(self, location: str):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fault: "FaultServer"

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)  # clients that hang up early are expected


class FaultServer:
    """Start with `with FaultServer() as srv:`; `srv.url("/ok.jpg")`; `srv.hits["/flaky"]` counts requests,
    `srv.hosts` lists the Host header of each. `tls=(cert_file, key_file)` serves https instead."""

    def __init__(
        self,
        slow_s: float = 3.0,
        big_bytes: int = 200_000,
        flaky_failures: int = 2,
        drip_s: float = 0.05,
        redirect_to: str = "/ok.jpg",
        tls=None,
    ):
        self.jpeg = sample_jpeg()
        self.slow_s, self.big_bytes = slow_s, big_bytes
        self.flaky_failures, self.drip_s, self.redirect_to = flaky_failures, drip_s, redirect_to
        self.hits = collections.Counter()
        self.hosts = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fault = self
        self.scheme = "https" if tls else "http"
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def count(self, path: str, host=None) -> None:
        with self._lock:
            self.hits[path] += 1
            self.hosts.append(host)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def __enter__(self) -> "FaultServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
