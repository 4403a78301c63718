"""Configuration: the role's exact shape is accepted, every bad value is refused naming file, key and value."""

import subprocess
import sys

import pytest
import yaml
from infra_obs_probe import cli
from infra_obs_probe.config import parse

from .probe_lab import exporter_env

EXAMPLE = """
listen: "0.0.0.0:9427"
source: {name: node-euc1-a, region: eu-central-1, az: eu-central-1a}
interval: 1.0
timeout: 1.0
window: 300
icmp: {enabled: true, payload_size: 56}
tcp: {enabled: true, port: 9427}
mtr: {enabled: true, interval: 30, max_hops: 16}
health: {loss_degraded: 0.01, loss_unhealthy: 0.05, rtt_p99_degraded: 0.1, rtt_p99_unhealthy: 0.25}
targets:
  static:
    - {name: db1, address: 127.0.0.2, region: eu-central-1, az: eu-central-1a, tcp_ports: [22]}
  consul:
    enabled: true
    url: http://127.0.0.1:8500
    service: infra-obs-probe
    regions: []
    azs: []
    refresh: 15
register:
  enabled: true
  url: http://127.0.0.1:8500
  service: infra-obs-probe
  address: 10.89.60.11
  address6: "fd00:89:60::11"
  tags: [metrics, probe]
"""


def check(path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "infra_obs_probe", "--config", str(path), "--check"],
        capture_output=True,
        text=True,
        env=exporter_env(),
    )


def check_in_process(path, capsys) -> tuple[int, str]:
    """The same CLI entry point, without a process start per case."""
    rc = cli.main(["--config", str(path), "--check"])
    return rc, capsys.readouterr().err.strip()


def test_the_roles_config_shape_is_valid(tmp_path):
    path = tmp_path / "probe.yml"
    path.write_text(EXAMPLE)
    result = check(path)
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout

    cfg = parse(yaml.safe_load(EXAMPLE), str(path))
    assert (cfg.listen_host, cfg.listen_port) == ("0.0.0.0", 9427)
    assert cfg.static[0].tcp_ports == (22,) and cfg.static[0].family == 4
    assert cfg.register.id == "infra-obs-probe-node-euc1-a"
    assert cfg.register.address6 == "fd00:89:60::11"
    assert cfg.register.port == 9427 and cfg.register.tags == ("metrics", "probe")
    assert cfg.mtr.count == 5 and cfg.icmp.socket == "auto" and cfg.matrix.timeout == 2.0


def test_minimal_config_gets_the_documented_defaults(tmp_path):
    cfg = parse({"source": {"name": "n1"}}, "min.yml")
    assert (cfg.interval, cfg.timeout, cfg.window) == (1.0, 1.0, 300.0)
    assert cfg.listen == "0.0.0.0:9427" and cfg.tcp.port == 9427
    assert not cfg.consul.enabled and not cfg.register.enabled
    assert cfg.health.loss_unhealthy == 0.05


def edit(change):
    data = yaml.safe_load(EXAMPLE)
    change(data)
    return yaml.safe_dump(data)


def setitem(path, value):
    def change(data):
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


BAD = [
    # (case, key named in the error, value named in the error, change)
    ("negative interval", "interval", "-1", setitem(["interval"], -1)),
    ("interval as text", "interval", '"fast"', setitem(["interval"], "fast")),
    ("window below interval", "window", "0.5", setitem(["window"], 0.5)),
    ("listen without port", "listen", '"0.0.0.0"', setitem(["listen"], "0.0.0.0")),
    ("listen host name", "listen", '"localhost:9427"', setitem(["listen"], "localhost:9427")),
    ("tiny payload", "icmp.payload_size", "8", setitem(["icmp", "payload_size"], 8)),
    ("socket mode", "icmp.socket", '"udp"', setitem(["icmp", "socket"], "udp")),
    ("tcp port", "tcp.port", "70000", setitem(["tcp", "port"], 70000)),
    ("max hops", "mtr.max_hops", "0", setitem(["mtr", "max_hops"], 0)),
    ("loss above 1", "health.loss_degraded", "1.5", setitem(["health", "loss_degraded"], 1.5)),
    ("unhealthy below degraded", "health.loss_unhealthy", "0.001", setitem(["health", "loss_unhealthy"], 0.001)),
    ("typo key", "intervall", "2", setitem(["intervall"], 2)),
    (
        "host name target",
        "targets.static[0].address",
        '"db1.x"',
        setitem(["targets", "static", 0, "address"], "db1.x"),
    ),
    ("port as text", "targets.static[0].tcp_ports", '["ssh"]', setitem(["targets", "static", 0, "tcp_ports"], ["ssh"])),
    ("enabled as text", "targets.consul.enabled", '"yes"', setitem(["targets", "consul", "enabled"], "yes")),
    ("consul url", "targets.consul.url", '"127.0.0.1:8500"', setitem(["targets", "consul", "url"], "127.0.0.1:8500")),
    ("regions", "targets.consul.regions", '"eu-central-1"', setitem(["targets", "consul", "regions"], "eu-central-1")),
    ("v6 in address", "register.address", '"fd00::1"', setitem(["register", "address"], "fd00::1")),
    ("v4 in address6", "register.address6", '"10.0.0.1"', setitem(["register", "address6"], "10.0.0.1")),
    ("check interval", "register.check_interval", '"10"', setitem(["register", "check_interval"], "10")),
    ("source name", "source.name", '""', setitem(["source", "name"], "")),
]


@pytest.mark.parametrize(("key", "value", "change"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_value_is_refused_naming_file_key_and_value(tmp_path, capsys, key, value, change):
    path = tmp_path / "probe.yml"
    path.write_text(edit(change))
    rc, message = check_in_process(path, capsys)
    assert rc == 1, message
    assert message.startswith(f"infra-obs-probe: invalid configuration: {path}: {key}: "), message
    assert message.endswith(f"(got {value})"), message


def test_duplicate_static_target_and_missing_source(tmp_path, capsys):
    path = tmp_path / "probe.yml"
    path.write_text(edit(lambda d: d["targets"]["static"].append(dict(d["targets"]["static"][0]))))
    assert f"{path}: targets.static[1]: duplicates targets.static[0]" in check_in_process(path, capsys)[1]
    path.write_text(edit(lambda d: d.pop("source")))
    assert f"{path}: source: is required" in check_in_process(path, capsys)[1]


def test_unreadable_and_malformed_files(tmp_path):
    missing = tmp_path / "nope.yml"
    result = check(missing)
    assert result.returncode == 1 and f"{missing}: (file): cannot be read" in result.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text("source: {name: a\ninterval: [1\n")
    result = check(broken)
    assert result.returncode == 1 and f"{broken}: line " in result.stderr and "invalid YAML" in result.stderr
