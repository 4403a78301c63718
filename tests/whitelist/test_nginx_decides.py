"""Property test: real nginx running the compiled geo config decides every request exactly as a reference
evaluation with Python's ipaddress does, for random groups (with includes), rules and addresses.

nginx runs on loopback with the compiled http config; the geo maps read the address from the X-Test-IP header
(compile_nginx's address_variable), so any IPv4 or IPv6 source can be tried from 127.0.0.1.
"""

import ipaddress
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from ansible_collections.infra.obs.plugins.plugin_utils.whitelist import compile_nginx, load
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lab_servers import free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


class Nginx:
    def __init__(self, prefix):
        self.prefix = prefix
        self.port = free_port()
        self.origin = free_port()
        self.process: subprocess.Popen | None = None

    def run(self, http_conf: str) -> None:
        (self.prefix / "http.conf").write_text(http_conf)
        (self.prefix / "nginx.conf").write_text(
            f"""
            worker_processes 1;
            pid {self.prefix}/nginx.pid;
            error_log {self.prefix}/error.log;
            events {{}}
            http {{
                access_log off;
                client_body_temp_path {self.prefix}/tmp;
                proxy_temp_path {self.prefix}/tmp;
                include {self.prefix}/http.conf;
                server {{ listen 127.0.0.1:{self.origin}; return 200 "origin"; }}
            }}
            """
        )
        (self.prefix / "tmp").mkdir(exist_ok=True)
        conf = str(self.prefix / "nginx.conf")
        subprocess.run([NGINX, "-t", "-q", "-p", str(self.prefix), "-c", conf], check=True)
        self.stop()
        self.process = subprocess.Popen([NGINX, "-p", str(self.prefix), "-c", conf, "-g", "daemon off;"])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.01)
        raise AssertionError((self.prefix / "error.log").read_text())

    def stop(self) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def status(self, address: str, path: str = "/", port: int | None = None) -> int:
        """The answer to a request claiming to come from address (X-Test-IP), on this server's port or another
        one its config listens on."""
        request = urllib.request.Request(f"http://127.0.0.1:{port or self.port}{path}", headers={"X-Test-IP": address})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code


@pytest.fixture(scope="module")
def nginx(tmp_path_factory):
    server = Nginx(tmp_path_factory.mktemp("nginx"))
    yield server
    server.stop()


ipv4_networks = st.builds(
    lambda address, prefix: ipaddress.ip_network(f"{ipaddress.IPv4Address(address)}/{prefix}", strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(9, 32),
)
ipv6_networks = st.builds(
    lambda address, prefix: ipaddress.ip_network(f"{ipaddress.IPv6Address(address)}/{prefix}", strict=False),
    st.integers(0, 2**128 - 1),
    st.integers(33, 128),
).filter(lambda network: not network.subnet_of(ipaddress.ip_network("::ffff:0:0/96")))
# Addresses in and around the IPv4-mapped range, where nginx and a naive reference disagree.
mapped_addresses = st.integers(0, 2**32 - 1).map(lambda v4: ipaddress.IPv6Address((0xFFFF << 32) | v4))


@st.composite
def whitelists(draw):
    """Groups g0..gN (each may include earlier ones, so no cycles), one http backend, one rule."""
    count = draw(st.integers(1, 4))
    groups = {}
    for index in range(count):
        networks = draw(st.lists(st.one_of(ipv4_networks, ipv6_networks), min_size=1, max_size=5))
        includes = draw(st.lists(st.sampled_from([f"g{i}" for i in range(index)]), unique=True)) if index else []
        groups[f"g{index}"] = {"cidrs": [str(n) for n in networks], "include": includes}
    chosen = draw(st.lists(st.sampled_from(sorted(groups)), min_size=1, unique=True))
    return groups, chosen


def addresses_for(networks, draw):
    """Addresses inside the allowed networks (first, last, random) and random ones outside."""
    picks = []
    for network in networks:
        picks += [
            network.network_address,
            network.broadcast_address,
            network.network_address + draw(st.integers(0, network.num_addresses - 1)),
        ]
        if network.version == 4:
            # The same client written IPv4-mapped must be let in too.
            picks.append(ipaddress.IPv6Address((0xFFFF << 32) | int(network.network_address)))
    picks += draw(
        st.lists(
            st.one_of(
                st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
                st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address),
                mapped_addresses,
            ),
            min_size=3,
            max_size=6,
        )
    )
    return picks


@settings(max_examples=40, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_nginx_decision_matches_reference(nginx, data):
    groups, chosen = data.draw(whitelists())
    document = {
        "groups": groups,
        "backends": {"app": {"protocol": "http", "listen": nginx.port, "upstreams": [f"127.0.0.1:{nginx.origin}"]}},
        "rules": [{"backend": "app", "groups": chosen}],
    }
    whitelist = load([("property.yml", document)])
    log = nginx.prefix / "decisions.log"
    conf = compile_nginx(whitelist, address_variable="$http_x_test_ip", access_log=str(log))["http.conf"]
    nginx.run(conf.replace(f"listen [::]:{nginx.port};", ""))

    allowed = [ipaddress.ip_network(c) for cidrs in whitelist.access()["app"]["/"].values() for c in cidrs]
    log.write_text("")
    addresses = addresses_for(allowed, data.draw)
    # nginx's documented semantics: an IPv4-mapped IPv6 client (::ffff:a.b.c.d) is matched as IPv4 a.b.c.d.
    matched_as = [a.ipv4_mapped or a if a.version == 6 else a for a in addresses]
    expected = [200 if any(a in network for network in allowed) else 403 for a in matched_as]
    for address, status in zip(addresses, expected, strict=True):
        assert nginx.status(str(address)) == status, (str(address), chosen, groups)
    # Every decision is logged for the denial metrics: backend, 1/0, status.
    nginx.stop()
    assert log.read_text().splitlines() == [f"app {int(s == 200)} {s}" for s in expected]
