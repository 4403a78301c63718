"""The check files' grammar, as their hostile authors meet it: every refusal names file, key and value, and what is
accepted comes out as typed values."""

import copy

import pytest
import yaml
from infra_obs_probe.config import ConfigError
from infra_obs_probe.quality.config import load, load_checks, parse, parse_checks, read_yaml

GOOD = {
    "service": "shop",
    "checks": [
        {
            "name": "front-page",
            "http": {
                "url": "https://shop.example.internal:8443/health?full=1",
                "status": [200, 204],
                "body_contains": "ok",
                "ca_file": "/etc/ssl/shop-ca.pem",
                "min_days_valid": 14,
            },
            "burst": {"count": 20, "concurrency": 4},
            "timeout": 1.5,
            "max_p50_ms": 50,
            "max_p99_ms": 250,
            "max_error_ratio": 0.05,
            "runs_on": ["mon"],
        },
        {"name": "db-port", "tcp": {"address": "10.0.0.5", "port": 5432}},
        {"name": "api-health", "grpc": {"address": "fd00::5", "port": 50051, "service": "shop.v1.Api"}},
        {"name": "exporters-registered", "consul": {"service": "node-exporter", "min_instances": 3}},
        {"name": "exporters-scraped", "prometheus": {"service": "node-exporter"}},
    ],
}
CHECKER = {
    "checker": {"name": "mon", "region": "eu-central-1", "az": "eu-central-1a"},
    "prometheus_url": "http://127.0.0.1:9090",
    "interval": 30,
}


def test_a_good_file_parses_to_typed_values():
    http, tcp, grpc, consul, prom = parse_checks(GOOD, "shop.yml")
    assert (http.kind, http.url, http.status, http.ca_file, http.min_days_valid) == (
        "http",
        "https://shop.example.internal:8443/health?full=1",
        (200, 204),
        "/etc/ssl/shop-ca.pem",
        14,
    )
    assert (http.burst.count, http.burst.concurrency, http.timeout) == (20, 4, 1.5)
    assert (http.thresholds.p50, http.thresholds.p99, http.thresholds.error_ratio) == (0.05, 0.25, 0.05)
    assert http.runs_on == ("mon",) and http.service == "shop"
    assert (tcp.host, tcp.port, tcp.target) == ("10.0.0.5", 5432, "10.0.0.5:5432")
    assert (grpc.host, grpc.target) == ("fd00::5", "[fd00::5]:50051/shop.v1.Api")
    assert (consul.target_service, consul.min_instances) == ("node-exporter", 3)
    assert (prom.kind, prom.min_instances) == ("prometheus", 1)


def test_a_checker_runs_its_own_and_the_unassigned_checks():
    config = parse(CHECKER, "quality.yml", parse_checks(GOOD, "shop.yml"))
    assert [c.name for c in config.mine()] == [c["name"] for c in GOOD["checks"]]
    other = parse({**CHECKER, "checker": {"name": "node-b"}}, "quality.yml", parse_checks(GOOD, "shop.yml"))
    assert "front-page" not in [c.name for c in other.mine()]
    assert config.register.service == "infra-obs-quality" and config.register.id == "infra-obs-quality-mon"


def replace(path, value):
    """GOOD with one value (a dotted path into the first check, or a top-level key) replaced."""
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


BAD = [
    # (what, path, value, key named in the error, words of the problem)
    ("name with a newline", "checks.0.name", "a\nb", "checks[0].name", "ASCII letters"),
    ("name with a label breaker", "checks.0.name", 'x"}', "checks[0].name", "ASCII letters"),
    ("service not a name", "service", "shop team", "service", "ASCII letters"),
    ("url with a space", "checks.0.http.url", "http://a b/", "checks[0].http.url", "URL"),
    ("url with a quote", "checks.0.http.url", 'http://a/"x', "checks[0].http.url", "URL"),
    ("url of another scheme", "checks.0.http.url", "file:///etc/passwd", "checks[0].http.url", "URL"),
    ("url with user info", "checks.0.http.url", "http://u:p@a/", "checks[0].http.url", "URL"),
    ("url port 0", "checks.0.http.url", "http://a:0/", "checks[0].http.url", "port"),
    ("url with a bad IPv4", "checks.0.http.url", "http://10.0.0.300/", "checks[0].http.url", "IPv4"),
    ("status not a list", "checks.0.http.status", 200, "checks[0].http.status", "status codes"),
    ("status out of range", "checks.0.http.status", [99], "checks[0].http.status", "status codes"),
    ("status a boolean", "checks.0.http.status", [True], "checks[0].http.status", "status codes"),
    (
        "body with control characters",
        "checks.0.http.body_contains",
        "a\x1b[2J",
        "checks[0].http.body_contains",
        "printable",
    ),
    ("body too long", "checks.0.http.body_contains", "x" * 201, "checks[0].http.body_contains", "200"),
    ("ca file relative", "checks.0.http.ca_file", "ca.pem", "checks[0].http.ca_file", "absolute"),
    ("ca file climbing", "checks.0.http.ca_file", "/etc/../root/key", "checks[0].http.ca_file", "segments"),
    ("unknown key in http", "checks.0.http.method", "DELETE", "checks[0].http.method", "unknown key"),
    ("two kinds", "checks.0.tcp", {"address": "10.0.0.1", "port": 1}, "checks[0]", "exactly one"),
    ("burst too big", "checks.0.burst", {"count": 100000}, "checks[0].burst.count", "between 1 and 1000"),
    (
        "concurrency over count",
        "checks.0.burst",
        {"count": 2, "concurrency": 4},
        "checks[0].burst.concurrency",
        "at most the count",
    ),
    ("timeout zero", "checks.0.timeout", 0, "checks[0].timeout", "> 0"),
    ("timeout a string", "checks.0.timeout", "1s", "checks[0].timeout", "a number"),
    ("threshold negative", "checks.0.max_p99_ms", -1, "checks[0].max_p99_ms", ">= 0"),
    ("error ratio over 1", "checks.0.max_error_ratio", 2, "checks[0].max_error_ratio", "<= 1"),
    ("runs_on not names", "checks.0.runs_on", ["a b"], "checks[0].runs_on", "list of names"),
    ("tcp host a shell word", "checks.1.tcp.address", "$(reboot)", "checks[1].tcp.address", "DNS name"),
    ("tcp address with a zone", "checks.1.tcp.address", "fe80::1%eth0", "checks[1].tcp.address", "IP address"),
    (
        "tcp address with look-alike digits",
        "checks.1.tcp.address",
        "\u0661\u0660.0.0.5",
        "checks[1].tcp.address",
        "IP address literal",
    ),
    ("tcp host with a semicolon", "checks.1.tcp.address", "db;reboot", "checks[1].tcp.address", "DNS name"),
    ("url with look-alike digits", "checks.0.http.url", "http://\u0661\u0660.0.0.1/", "checks[0].http.url", "URL"),
    ("url with a brace in the query", "checks.0.http.url", "http://a/?x={y}", "checks[0].http.url", "URL"),
    ("name too long", "checks.0.name", "x" * 65, "checks[0].name", "at most 64"),
    ("service with a brace", "service", "shop}", "service", "ASCII letters"),
    ("tcp port too big", "checks.1.tcp.port", 70000, "checks[1].tcp.port", "between 1 and 65535"),
    ("tcp port missing", "checks.1.tcp", {"address": "10.0.0.1"}, "checks[1].tcp.port", "between 1 and 65535"),
    ("grpc service with a slash", "checks.2.grpc.service", "a/b", "checks[2].grpc.service", "gRPC service name"),
    ("consul service not a name", "checks.3.consul.service", "../x", "checks[3].consul.service", "ASCII letters"),
    ("no checks", "checks", [], "checks", "non-empty list"),
    ("checks a mapping", "checks", {"name": "x"}, "checks", "non-empty list"),
    ("unknown top-level key", "owner", "x", "owner", "unknown key"),
]


@pytest.mark.parametrize(("what", "path", "value", "key", "problem"), BAD, ids=[b[0] for b in BAD])
def test_hostile_values_are_refused_naming_file_key_and_value(what, path, value, key, problem):
    with pytest.raises(ConfigError) as e:
        parse_checks(replace(path, value), "checks/shop.yml")
    assert e.value.path == "checks/shop.yml"
    assert e.value.key == key, what
    assert problem in e.value.problem, what
    text = str(e.value)
    assert "\n" not in text and "\x1b" not in text


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ("a: &x [1]\nb: *x\n", "line 2", "aliases are not allowed"),
        ("service: a\nservice: b\nchecks: []\n", "line 2", "duplicate key"),
        ("service: [unclosed\n", "line 2", "invalid YAML"),
        ("!!python/object:os.system x\n", "line 1", "invalid YAML"),
    ],
)
def test_hostile_yaml_is_refused_with_its_line(tmp_path, text, where, problem):
    path = tmp_path / "shop.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        read_yaml(str(path))
    assert e.value.key.startswith(where) and problem in e.value.problem


def test_a_huge_or_binary_file_is_refused(tmp_path):
    big = tmp_path / "big.yml"
    big.write_bytes(b"#" * (2 << 20))
    binary = tmp_path / "binary.yml"
    binary.write_bytes(b"\xff\xfe\x00")
    for path, problem in ((big, "larger than"), (binary, "not UTF-8")):
        with pytest.raises(ConfigError) as e:
            read_yaml(str(path))
        assert problem in e.value.problem


def test_check_names_are_unique_across_files(tmp_path):
    (tmp_path / "a.yml").write_text(yaml.safe_dump({"service": "a", "checks": [GOOD["checks"][1]]}))
    (tmp_path / "b.yml").write_text(yaml.safe_dump({"service": "b", "checks": [GOOD["checks"][1]]}))
    with pytest.raises(ConfigError) as e:
        load_checks(str(tmp_path))
    assert e.value.path == str(tmp_path / "b.yml") and e.value.key == "checks[0].name"
    assert str(tmp_path / "a.yml") in e.value.problem
    (tmp_path / "b.yml").write_text(
        yaml.safe_dump({"service": "b", "checks": [copy.deepcopy(GOOD["checks"][1]) for _ in "ab"]})
    )
    (tmp_path / "a.yml").unlink()
    with pytest.raises(ConfigError) as e:
        load_checks(str(tmp_path))
    assert e.value.key == "checks[1].name"


def test_a_prometheus_check_needs_the_checkers_prometheus(tmp_path):
    checks = parse_checks(GOOD, "shop.yml")
    without = {k: v for k, v in CHECKER.items() if k != "prometheus_url"}
    with pytest.raises(ConfigError) as e:
        parse(without, "quality.yml", checks)
    assert e.value.path == "shop.yml" and e.value.key == "exporters-scraped" and "prometheus_url" in e.value.problem
    elsewhere = [c for c in GOOD["checks"] if "prometheus" not in c] + [
        {"name": "scraped-elsewhere", "runs_on": ["node-b"], "prometheus": {"service": "x"}}
    ]
    assert parse(without, "quality.yml", parse_checks({**GOOD, "checks": elsewhere}, "shop.yml"))


def test_the_checkers_file_loads_its_checks_directory(tmp_path):
    (tmp_path / "checks").mkdir()
    (tmp_path / "checks/shop.yml").write_text(yaml.safe_dump(GOOD))
    (tmp_path / "checks/README.txt").write_text("not a check file")
    (tmp_path / "quality.yml").write_text(yaml.safe_dump({**CHECKER, "checks_dir": str(tmp_path / "checks")}))
    config = load(str(tmp_path / "quality.yml"))
    assert len(config.checks) == 5 and config.checks[0].path == str(tmp_path / "checks/shop.yml")
    (tmp_path / "quality.yml").write_text(yaml.safe_dump({**CHECKER, "listen": "0.0.0.0:99999"}))
    with pytest.raises(ConfigError) as e:
        load(str(tmp_path / "quality.yml"))
    assert e.value.key == "listen"
