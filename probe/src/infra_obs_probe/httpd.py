"""The HTTP side: /metrics, /-/healthy, /paths.json, /matrix and /matrix.json on a threaded stdlib server."""

from __future__ import annotations

import gzip
import json
import logging
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from . import exposition, matrix

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("infra_obs_probe")

INDEX = (
    b"<!DOCTYPE html><html><head><meta charset='utf-8'><title>infra-obs-probe</title></head><body>"
    b"<h1>infra-obs-probe</h1><ul><li><a href='metrics'>metrics</a></li><li><a href='paths.json'>paths.json</a></li>"
    b"<li><a href='matrix'>matrix</a></li><li><a href='matrix.json'>matrix.json</a></li></ul></body></html>"
)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    app: App

    def process_request(self, request, client_address):
        """Peers' TCP probes connect and reset at once: close those here instead of starting a thread each."""
        try:
            if request.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                self.shutdown_request(request)
                return
        except BlockingIOError:
            pass
        except OSError:
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def handle_error(self, request, client_address):
        log.debug("HTTP connection from %s failed", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format, *args):
        """No access log: Prometheus and peers poll constantly."""

    def _send(self, code: int, body: bytes, content_type: str, compressible: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        if compressible and "gzip" in self.headers.get("Accept-Encoding", ""):
            # Prometheus asks for it: /metrics at 10,000 paths shrinks about tenfold (level 1: a fraction of the
            # render's time, most of the gain of level 9)
            body = gzip.compress(body, compresslevel=1)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: dict) -> None:
        self._send(200, json.dumps(data, allow_nan=False).encode(), "application/json")

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        app = self.server.app
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/metrics":
            self._send(200, exposition.render(app.prober, app.status), exposition.CONTENT_TYPE, compressible=True)
        elif url.path == "/-/healthy":
            problem = app.prober.health()
            self._send(503 if problem else 200, f"{problem or 'Healthy'}\n".encode(), "text/plain")
        elif url.path == "/paths.json":
            try:
                window = float(query["window"][0]) if "window" in query else None
            except ValueError:
                window = -1.0
            if window is not None and not window > 0:
                self._send(400, b"window must be a number of seconds > 0\n", "text/plain")
                return
            self._json(matrix.local_paths(app.prober, app.config, window))
        elif url.path == "/matrix.json":
            self._json(app.matrix())
        elif url.path == "/matrix":
            self._send(200, matrix.render_html(app.matrix()).encode(), "text/html; charset=utf-8")
        elif url.path == "/":
            self._send(200, INDEX, "text/html; charset=utf-8")
        else:
            self._send(404, b"not found\n", "text/plain")


class HttpServer:
    def __init__(self, app: App):
        self.app = app
        self._server: _Server | None = None
        self.address: tuple[str, int] | None = None

    def start(self, host: str, port: int) -> None:
        """Bind (raises OSError, e.g. when the address is taken) and serve."""
        cls = _Server6 if ":" in host else _Server
        server = cls((host, port), Handler)
        server.app = self.app
        threading.Thread(target=server.serve_forever, name=f"http-{port}", daemon=True).start()
        self._server, self.address = server, (host, port)
        log.info("listening on %s port %d", host, port)

    def rebind(self, host: str, port: int) -> None:
        """Move to a new address; if it cannot be bound, serve on the old one again and raise."""
        old = self.address
        self.stop()
        try:
            self.start(host, port)
        except OSError:
            if old is not None:
                self.start(*old)
            raise

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
