"""Fixtures for the probe exporter tests: real sockets, network namespaces, Consul 1.8 and promtool."""

import os

import pytest
from infra_obs_probe.config import parse
from infra_obs_probe.engine import Prober

from .probe_lab import ConsulAgent, Exporter, Netns


@pytest.fixture(autouse=True)
def _root():
    if os.geteuid() != 0:
        pytest.skip("the probe tests need root: raw ICMP sockets, network namespaces, iptables")


@pytest.fixture
def netns():
    """Factory of network namespaces (loopback up), all deleted after the test."""
    made = []

    def make(prefix: str = "iop") -> Netns:
        ns = Netns(prefix)
        made.append(ns)
        return ns

    yield make
    for ns in made:
        ns.close()


@pytest.fixture
def exporter(tmp_path):
    """Factory of exporter processes, all stopped after the test; the log of a failed one is printed."""
    started = []

    def start(config: dict, netns: Netns | None = None) -> Exporter:
        e = Exporter(config, netns, tmp_path)
        started.append(e)
        return e

    yield start
    for e in started:
        e.stop()
        print(f"--- exporter log {e.log_path}\n{e.log_path.read_text()}")


@pytest.fixture(scope="session")
def consul_agent():
    agent = ConsulAgent()
    yield agent
    agent.stop()


@pytest.fixture
def prober():
    """Factory of in-process probers (root namespace, loopback targets), stopped after the test."""
    started = []

    def start(targets, **config):
        p = Prober(parse({"source": {"name": "node-a", "region": "r1", "az": "r1a"}, **config}, "test.yml"))
        p.update(source="static", targets=targets)
        p.start()
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()
