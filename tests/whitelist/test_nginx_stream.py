"""Stream (TCP) backends with real nginx: an allowed client gets a working session through the proxy, a denied
one has its connection closed without reaching the upstream."""

import socket
import socketserver
import subprocess
import threading

import pytest
from ansible_collections.infra.obs.plugins.plugin_utils.whitelist import compile_nginx, load
from test_nginx_decides import NGINX, free_port


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(b"echo:" + self.request.recv(64))


@pytest.fixture
def echo_server():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def session(port: int) -> bytes | None:
    """What the proxy answers to b"ping"; None when it closed (or reset) the connection without a byte."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"ping")
        try:
            return sock.recv(64) or None
        except ConnectionResetError:
            return None


def test_allowed_client_has_a_session_and_denied_client_is_closed(tmp_path, echo_server):
    allowed_port, denied_port = free_port(), free_port()
    whitelist = load(
        [
            (
                "stream.yml",
                {
                    "groups": {"local": {"cidrs": ["127.0.0.0/8"]}, "elsewhere": {"cidrs": ["192.0.2.0/24"]}},
                    "backends": {
                        "open": {
                            "protocol": "stream",
                            "listen": allowed_port,
                            "upstreams": [f"127.0.0.1:{echo_server}"],
                        },
                        "shut": {
                            "protocol": "stream",
                            "listen": denied_port,
                            "upstreams": [f"127.0.0.1:{echo_server}"],
                        },
                    },
                    "rules": [{"backend": "open", "groups": ["local"]}, {"backend": "shut", "groups": ["elsewhere"]}],
                },
            )
        ]
    )
    stream = compile_nginx(whitelist, access_log=str(tmp_path / "decisions.log"))["stream.conf"]
    (tmp_path / "stream.conf").write_text(
        stream.replace(f"listen [::]:{allowed_port};", "").replace(f"listen [::]:{denied_port};", "")
    )
    (tmp_path / "nginx.conf").write_text(
        # Debian builds the stream module as a dynamic module (package libnginx-mod-stream).
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n"
        f"worker_processes 1; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;\n"
        f"events {{}}\nstream {{ include {tmp_path}/stream.conf; }}\n"
    )
    conf = str(tmp_path / "nginx.conf")
    subprocess.run([NGINX, "-t", "-q", "-p", str(tmp_path), "-c", conf], check=True)
    process = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", conf, "-g", "daemon off;"])
    try:
        for port in (allowed_port, denied_port):
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    threading.Event().wait(0.01)
        assert session(allowed_port) == b"echo:ping"
        assert session(denied_port) is None
        assert "no live upstreams" in (tmp_path / "error.log").read_text()
    finally:
        process.terminate()
        process.wait(timeout=10)
    # Each connection is logged for the denial metrics: backend, 1/0, status (the readiness probes included).
    decisions = {line for line in (tmp_path / "decisions.log").read_text().splitlines()}
    assert "open 1 200" in decisions and "shut 0 502" in decisions
    assert not any(line.startswith("shut 1") or line.startswith("open 0") for line in decisions)
