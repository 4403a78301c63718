"""Opt-in trusted proxies with real nginx: behind a trusted proxy the client named in X-Forwarded-For is looked up;
the same header from any other source is ignored, so a client cannot spoof its way in."""

import http.client

import pytest
from ansible_collections.infra.obs.plugins.plugin_utils.whitelist import compile_nginx, load
from test_nginx_decides import Nginx


def status(port: int, source: str, forwarded_for: str) -> int:
    """Status of a request sent from `source` (a loopback address) claiming to forward `forwarded_for`."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
    try:
        connection.request("GET", "/", headers={"X-Forwarded-For": forwarded_for})
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.fixture
def nginx(tmp_path):
    server = Nginx(tmp_path)
    yield server
    server.stop()


def whitelist(port: int, origin: int, trusted: list[str]):
    settings = {"trusted_proxies": trusted} if trusted else {}
    return load(
        [
            (
                "w.yml",
                {
                    "settings": settings,
                    "groups": {"office": {"cidrs": ["198.51.100.0/24"]}},
                    "backends": {"app": {"listen": port, "upstreams": [f"127.0.0.1:{origin}"]}},
                    "rules": [{"backend": "app", "groups": ["office"]}],
                },
            )
        ]
    )


def test_trusted_proxy_forwards_the_client_and_others_cannot_spoof(nginx):
    http = compile_nginx(whitelist(nginx.port, nginx.origin, ["127.0.0.2/32"]))["http.conf"]
    nginx.run(http.replace(f"listen [::]:{nginx.port};", "").replace("/var/log/nginx/", f"{nginx.prefix}/"))
    # 127.0.0.2 is the trusted proxy: the office client it forwards gets through, an outsider does not.
    assert status(nginx.port, "127.0.0.2", "198.51.100.9") == 200
    assert status(nginx.port, "127.0.0.2", "203.0.113.9") == 403
    # A proxy chain: the rightmost untrusted address is the client (real_ip_recursive).
    assert status(nginx.port, "127.0.0.2", "198.51.100.9, 127.0.0.2") == 200
    assert status(nginx.port, "127.0.0.2", "198.51.100.9, 203.0.113.9") == 403
    # Any other source claiming an office address is judged by its own address.
    assert status(nginx.port, "127.0.0.3", "198.51.100.9") == 403


def test_without_trusted_proxies_the_header_is_ignored(nginx):
    http = compile_nginx(whitelist(nginx.port, nginx.origin, []))["http.conf"]
    assert "real_ip" not in http
    nginx.run(http.replace(f"listen [::]:{nginx.port};", "").replace("/var/log/nginx/", f"{nginx.prefix}/"))
    assert status(nginx.port, "127.0.0.2", "198.51.100.9") == 403
