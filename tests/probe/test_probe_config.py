"""Configuration: the role's exact shape is accepted, every bad value is refused naming file, key and value."""

import subprocess
import sys

import pytest
import yaml
from infra_obs_probe import cli
from infra_obs_probe.config import ConfigError, parse

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
    # What cannot run: a loop that would spin, or a window whose samples no host holds (issue 12's reproducers).
    ("microsecond interval", "interval", "1e-06", setitem(["interval"], 1e-6)),
    ("NaN interval", "interval", "NaN", setitem(["interval"], float("nan"))),  # no bound comparison holds for NaN
    ("day window at 10 ms", "window", "86400", lambda d: d.update(interval=0.01, window=86400)),
    ("day window at 1 s", "window", "86400", setitem(["window"], 86400)),
    ("mtr interval 1 ms", "mtr.interval", "0.001", setitem(["mtr", "interval"], 0.001)),
    ("consul refresh 1 ms", "targets.consul.refresh", "0.001", setitem(["targets", "consul", "refresh"], 0.001)),
    (
        "zone id",
        "targets.static[0].address",
        '"fe80::1%lo"',
        setitem(["targets", "static", 0, "address"], "fe80::1%lo"),
    ),
    ("tag with a space", "register.tags", '["metrics", "a b"]', setitem(["register", "tags"], ["metrics", "a b"])),
]


@pytest.mark.parametrize(("key", "value", "change"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_value_is_refused_naming_file_key_and_value(tmp_path, capsys, key, value, change):
    path = tmp_path / "probe.yml"
    path.write_text(edit(change))
    rc, message = check_in_process(path, capsys)
    assert rc == 1, message
    assert message.startswith(f"infra-obs-probe: invalid configuration: {path}: {key}: "), message
    assert message.endswith(f"(got {value})"), message


def test_the_window_error_states_the_memory_per_path(tmp_path, capsys):
    path = tmp_path / "probe.yml"
    path.write_text(edit(lambda d: d.update(interval=0.01, window=86400)))
    message = check_in_process(path, capsys)[1]
    assert "keeps 8,640,000 samples per path at interval 0.01 s (about 395.5 MiB per path): at most 36,000" in message


def test_an_impossible_ipv4_address_is_called_that_not_a_host_name(tmp_path, capsys):
    path = tmp_path / "probe.yml"
    path.write_text(edit(setitem(["targets", "static", 0, "address"], "999.1.1.1")))
    message = check_in_process(path, capsys)[1]
    assert "targets.static[0].address: is not an IPv4 address: four numbers 0-255 separated by dots" in message
    path.write_text(edit(setitem(["targets", "static", 0, "address"], "db1.example")))
    assert "must be an IP address literal (no host names, no zone id)" in check_in_process(path, capsys)[1]


def add_target(**target):
    return lambda d: d["targets"]["static"].append({"name": "db1", "address": "127.0.0.2", **target})


def test_duplicate_targets_by_name_and_by_address_and_missing_source(tmp_path, capsys):
    path = tmp_path / "probe.yml"
    path.write_text(edit(add_target()))
    assert (
        f"{path}: targets.static[1].address: is the same target as targets.static[0]"
        in (check_in_process(path, capsys)[1])
    )
    path.write_text(edit(add_target(name="db2")))
    assert (
        f"{path}: targets.static[1].address: is 'db1''s address in targets.static[0]"
        in (check_in_process(path, capsys)[1])
    )
    path.write_text(edit(add_target(address="127.0.0.3")))
    assert (
        f'{path}: targets.static[1].name: already has an IPv4 address in targets.static[0] (127.0.0.2) (got "db1")'
        in check_in_process(path, capsys)[1]
    )
    path.write_text(edit(add_target(address="::1")))  # one address per family: a dual-stack host
    assert check_in_process(path, capsys)[0] == 0
    path.write_text(edit(lambda d: d.pop("source")))
    assert f"{path}: source: is required" in check_in_process(path, capsys)[1]


HOSTILE = {
    "newline": "db1\nx",
    "trailing newline": "db1\n",
    "quote": 'db1"}',
    "brace": "db1{x}",
    "semicolon": "db1;x",
    "space": "db1 x",
    "NUL": "db1\x00",
    "non-ASCII": "dbé1",
    "fullwidth digit": "db\uff11",
    "very long": "d" * 300,
}
NAMED_FIELDS = [
    ["source", "name"],
    ["source", "region"],
    ["source", "az"],
    ["targets", "static", 0, "name"],
    ["targets", "static", 0, "region"],
    ["targets", "static", 0, "az"],
    ["targets", "consul", "service"],
    ["register", "service"],
    ["register", "id"],
    ["register", "team"],
]


@pytest.mark.parametrize("field", NAMED_FIELDS, ids=lambda f: ".".join(map(str, f)))
def test_hostile_text_in_a_name_is_refused_naming_file_key_and_value(tmp_path, field):
    for kind, value in HOSTILE.items():
        data = yaml.safe_load(edit(setitem(field, value)))
        key = ".".join(f"[{k}]" if isinstance(k, int) else k for k in field).replace(".[", "[")
        with pytest.raises(ConfigError) as refused:
            parse(data, "probe.yml")
        assert (refused.value.key, refused.value.value) == (key, value), kind
        assert str(refused.value).startswith(f"probe.yml: {key}: must be ASCII letters, digits and . _ -"), kind
        assert len(str(refused.value)) < 400, kind  # the value is cut short


@pytest.mark.parametrize(("kind", "value"), list(HOSTILE.items()), ids=list(HOSTILE))
def test_hostile_text_in_a_list_of_names_or_an_address_is_refused(kind, value):
    for field, key in (
        (["targets", "consul", "regions"], "targets.consul.regions"),
        (["targets", "consul", "azs"], "targets.consul.azs"),
        (["targets", "consul", "datacenters"], "targets.consul.datacenters"),
        (["register", "tags"], "register.tags"),
    ):
        with pytest.raises(ConfigError) as refused:
            parse(yaml.safe_load(edit(setitem(field, ["ok", value]))), "probe.yml")
        assert refused.value.key == key and "must be a list of names" in str(refused.value)
    for field, key in (
        (["targets", "static", 0, "address"], "targets.static[0].address"),
        (["register", "address"], "register.address"),
        (["register", "address6"], "register.address6"),
    ):
        with pytest.raises(ConfigError) as refused:
            parse(yaml.safe_load(edit(setitem(field, f"127.0.0.2{value}"))), "probe.yml")
        assert refused.value.key == key and "IP address literal" in str(refused.value)


URL_FIELDS = [["targets", "consul", "url"], ["register", "url"], ["register", "check_url"]]


@pytest.mark.parametrize("field", URL_FIELDS, ids=".".join)
def test_hostile_text_in_a_url_is_refused_naming_file_key_and_value(field):
    key = ".".join(field)
    good = "http://127.0.0.1:8500"
    hosts = [(kind, f"http://{text}:8500") for kind, text in HOSTILE.items()]
    hosts += [("zone id", "http://[fe80::1%lo]:8500"), ("bad IPv4", "http://999.1.1.1:8500")]
    paths = [(kind, value) for kind, text in HOSTILE.items() for value in (f"{good}/{text}", f"{good}{text}")]
    for kind, value in hosts + paths:
        with pytest.raises(ConfigError) as refused:
            parse(yaml.safe_load(edit(setitem(field, value))), "probe.yml")
        assert (refused.value.key, refused.value.value) == (key, value), (kind, value)
        assert str(refused.value).startswith(f"probe.yml: {key}: "), (kind, value)
    for value in (good, "https://consul.service.eu-central-1.example:8501/", "http://[fd00::1]:8500/v1"):
        parse(yaml.safe_load(edit(setitem(field, value))), "probe.yml")


def test_unreadable_and_malformed_files(tmp_path):
    missing = tmp_path / "nope.yml"
    result = check(missing)
    assert result.returncode == 1 and f"{missing}: (file): cannot be read" in result.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text("source: {name: a\ninterval: [1\n")
    result = check(broken)
    assert result.returncode == 1 and f"{broken}: line " in result.stderr and "invalid YAML" in result.stderr
