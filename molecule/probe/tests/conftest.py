"""Verify's one piece of shared state: 20% of the echo requests into node2 are dropped from the first test on, so
the exporters' window of loss fills while the core's tests run, rather than in a wait of its own."""

import subprocess
import time
import types

import pytest

LOSSY = "infraobs-mol-probe-node2"
ECHO_LOSS = [
    ("iptables", "-p", "icmp", "--icmp-type", "echo-request"),
    ("ip6tables", "-p", "ipv6-icmp", "--icmpv6-type", "echo-request"),
]


def _iptables(action: str) -> None:
    drop = ["-m", "statistic", "--mode", "random", "--probability", "0.2", "-j", "DROP"]
    for tool, *match in ECHO_LOSS:
        subprocess.run(["podman", "exec", LOSSY, tool, action, "INPUT", *match, *drop], check=True)


@pytest.fixture(scope="session", autouse=True)
def injected_loss():
    """The host that drops 20% of the echo requests it is sent (IPv4 and IPv6), and the monotonic time since when."""
    _iptables("-I")
    yield types.SimpleNamespace(host=LOSSY, since=time.monotonic())
    _iptables("-D")
