"""The collector's configuration file, written by its role but assumed hostile: every key parsed to a typed value,
each refusal naming file, key and value, and the database password never shown."""

import pytest
import yaml
from infra_obs_cost.cli import INVALID, main
from infra_obs_cost.config import Reports, load
from infra_obs_probe.config import ConfigError


@pytest.fixture
def write(tmp_path):
    def write(data, name="cost.yml") -> str:
        path = tmp_path / name
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        return str(path)

    return write


@pytest.fixture
def password(tmp_path):
    path = tmp_path / "db-password"
    path.write_text("s3cret-Password!\n")
    return str(path)


def test_the_defaults_read_from_prometheus_into_sqlite(write):
    config = load(write({}))
    assert (config.source, config.prometheus_url, config.database.driver, config.database.path) == (
        "prometheus", "http://127.0.0.1:9090", "sqlite", "/var/lib/infra-obs-cost/cost.db",
    )  # fmt: skip
    assert (config.days, config.min_samples, config.interval) == (14, 144, 86400.0)
    assert (config.listen_host, config.listen_port, config.register.service) == ("127.0.0.1", 9312, "infra-obs-cost")
    # The reports go beside the state file unless told otherwise, and come with the findings.
    assert config.reports == Reports(True, "/var/lib/infra-obs-cost/reports")
    assert load(write({"findings": {"enabled": False}})).reports.enabled is False


def test_a_mysql_database_reads_its_password_from_the_file_and_never_shows_it(write, password):
    path = write({"database": {"driver": "mysql", "host": "db.lab", "password_file": password, "port": 3307}})
    database = load(path).database
    assert (database.host, database.port, database.name, database.user) == ("db.lab", 3307, "infra_obs_cost",
                                                                            "infra_obs_cost")  # fmt: skip
    assert database.password == "s3cret-Password!"
    assert "s3cret" not in repr(database) and "s3cret" not in str(load(path))


def test_the_cloudwatch_source_names_its_regions(write):
    config = load(write({"source": "cloudwatch", "cloudwatch": {"regions": ["us-east-1", "eu-central-1"],
                                                               "endpoint_url": "http://127.0.0.1:19000"}}))  # fmt: skip
    assert config.cloudwatch_regions == ("us-east-1", "eu-central-1")
    assert config.cloudwatch_endpoint_url == "http://127.0.0.1:19000"


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        ({"source": "cloudwatch"}, "cloudwatch.regions", "at least one region"),
        ({"source": "influx"}, "source", "must be one of prometheus, cloudwatch"),
        ({"cloudwatch": {"regions": ["us-east-1; rm -rf /"]}}, "cloudwatch.regions", "list of names"),
        ({"cloudwatch": {"regions": ["us_east_1"]}}, "cloudwatch.regions", "AWS region names"),
        ({"cloudwatch": {"endpoint_url": "http://x.lab/\nInjected: 1"}}, "cloudwatch.endpoint_url", "URL"),
        ({"prometheus": {"url": "http://127.0.0.1:9090/api?x=1"}}, "prometheus.url", "URL"),
        ({"prometheus": {"url": "file:///etc/passwd"}}, "prometheus.url", "URL"),
        ({"prometheus": {"url": "http://\uff11\uff12\uff17.0.0.1:9090"}}, "prometheus.url", "URL"),  # look-alikes
        ({"prometheus": {"timeout": 0}}, "prometheus.timeout", "> 0"),
        ({"database": {"driver": "postgres"}}, "database.driver", "must be one of sqlite, mysql"),
        ({"database": {"path": "relative.db"}}, "database.path", "absolute path"),
        ({"database": {"path": "/var/lib/../../etc/shadow"}}, "database.path", "no . or .. parts"),
        ({"database": {"driver": "mysql"}}, "database.password_file", "is required"),
        ({"database": {"driver": "mysql", "password": "x", "password_file": "/p"}}, "database.password", "unknown key"),
        ({"database": {"driver": "mysql", "host": "db;drop", "password_file": "/p"}}, "database.host", "ASCII"),
        ({"database": {"driver": "mysql", "name": "cost`; DROP", "password_file": "/p"}}, "database.name", "letters"),
        ({"database": {"driver": "mysql", "user": "a'@'%", "password_file": "/p"}}, "database.user", "letters"),
        ({"database": {"driver": "mysql", "port": 0, "password_file": "/p"}}, "database.port", "between 1 and"),
        ({"days": 0}, "days", "between 1 and 62"),
        ({"days": "14"}, "days", "must be an integer"),
        ({"days": True}, "days", "must be an integer"),
        ({"min_samples": 289}, "min_samples", "between 1 and 288"),
        ({"interval": 10}, "interval", ">= 60"),
        ({"state_file": "/run/x/../state.json"}, "state_file", "no . or .. parts"),
        ({"listen": "0.0.0.0:99999"}, "listen", "HOST:PORT"),
        ({"register": {"service": "cost\nX"}}, "register.service", "ASCII"),
        ({"collector": {"name": "a b"}}, "collector.name", "ASCII"),
        ({"findings": {"enabled": "no"}}, "findings.enabled", "true or false"),
        ({"findings": {"policy_file": "findings.yml"}}, "findings.policy_file", "absolute path"),
        ({"findings": {"prices_file": "/etc/../prices.yml"}}, "findings.prices_file", "no . or .. parts"),
        ({"findings": {"instance_types": 1}}, "findings.instance_types", "true or false"),
        ({"findings": {"rules": {}}}, "findings.rules", "unknown key"),
        ({"findings": {"enabled": False}, "reports": {"enabled": True}}, "reports.enabled", "needs findings.enabled"),
        ({"reports": {"directory": "/var/lib/infra-obs-cost/../../etc"}}, "reports.directory", "no . or .. parts"),
        ({"reports": {"directory": "/srv/reports dir"}}, "reports.directory", "absolute path"),
        ({"reports": {"directory": "/srv/reports\nx"}}, "reports.directory", "absolute path"),
        ({"reports": {"directory": "/" + "r" * 300}}, "reports.directory", "absolute path"),
        ({"reports": {"publish": "s3"}}, "reports.publish", "unknown key"),
        ({"surprise": 1}, "surprise", "unknown key"),
        ([1, 2], "(top level)", "must be a mapping"),
    ],
)
def test_hostile_values_are_refused_naming_file_key_and_value(write, data, key, problem):
    path = write(data)
    with pytest.raises(ConfigError) as refused:
        load(path)
    text = str(refused.value)
    assert text.startswith(f"{path}: {key}: "), text
    assert problem in text, text


def test_a_password_file_that_is_missing_or_empty_is_named_but_not_read_out(write, tmp_path):
    with pytest.raises(ConfigError, match=r"database\.password_file: cannot be read"):
        load(write({"database": {"driver": "mysql", "password_file": str(tmp_path / "none")}}))
    empty = tmp_path / "empty"
    empty.write_text("\nsecond-line-secret\n")
    with pytest.raises(ConfigError, match="holds no password") as refused:
        load(write({"database": {"driver": "mysql", "password_file": str(empty)}}))
    assert "second-line-secret" not in str(refused.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a: &x [1]\nb: *x\n", "aliases are not allowed"),
        ("days: 1\ndays: 2\n", "duplicate key 'days'"),
        ("days: [\n", "invalid YAML"),
    ],
)
def test_hostile_yaml_is_refused(write, text, problem):
    with pytest.raises(ConfigError, match=problem):
        load(write(text))


def test_validate_says_ok_or_exits_2_with_the_error(write, capsys):
    assert main(["validate", "--config", write({"days": 7})]) == 0
    assert capsys.readouterr().out.endswith(": OK\n")
    assert main(["validate", "--config", write({"days": 700})]) == INVALID
    assert "days: must be between 1 and 62 (got 700)" in capsys.readouterr().err


def test_the_policy_and_price_files_are_read_with_the_config_and_their_errors_name_them(write, tmp_path):
    policy, prices = tmp_path / "findings.yml", tmp_path / "prices.yml"
    policy.write_text("teams:\n  web:\n    rds_idle: {min_days: 3}\n")
    prices.write_text("rds: {db.m5.large: 0.171}\n")
    config = load(write({"findings": {"policy_file": str(policy), "prices_file": str(prices)}}))
    assert [r.min_days for r in config.findings.policy.rules_of("web") if r.name == "rds_idle"] == [3]
    assert config.findings.policy.prices.monthly("rds", "db.m5.large") == 124.83
    assert (config.findings.enabled, config.findings.instance_types) == (True, False)
    policy.write_text("teams:\n  web:\n    rds_idle: {min_days: 9}\n")  # more than the rule's 7 days
    with pytest.raises(ConfigError) as refused:
        load(write({"findings": {"policy_file": str(policy)}}))
    assert str(refused.value).startswith(f"{policy}: teams.web.rds_idle.min_days: must be between 1 and 7"), refused
    with pytest.raises(ConfigError, match=r"prices.yml: \(file\): cannot be read"):
        load(write({"findings": {"prices_file": str(tmp_path / "none" / "prices.yml")}}))
