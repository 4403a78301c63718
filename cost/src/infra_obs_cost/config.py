"""The collector's configuration (the file its role renders): every key parsed to a typed value, errors naming
file, key and value. The grammar and the YAML loader are the probe package's, which all our daemons share."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from infra_obs_probe.config import (
    HOST_NAME,
    ConfigError,
    Register,
    Source,
    _listen,
    _Map,
    _register,
    _url,
)
from infra_obs_probe.quality.config import read_yaml

from .findings import Policy, load_policy
from .model import REGION
from .store import Database

SOURCES = ("prometheus", "cloudwatch")
DRIVERS = ("sqlite", "mysql")
ABSOLUTE_PATH = re.compile(r"/[A-Za-z0-9._/-]{1,255}")
DATABASE_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")
DATABASE_USER = re.compile(r"[A-Za-z0-9_.-]{1,80}")
SAMPLE_PERIOD = 300  # YACE's and CloudWatch's 5 minutes: 288 samples a day


@dataclass(frozen=True)
class Findings:
    enabled: bool
    policy: Policy  # the rules, per-team overrides and prices, read when the config is
    instance_types: bool  # ask EC2 and RDS for the resources' types (the price table's keys)


@dataclass(frozen=True)
class Reports:
    enabled: bool
    directory: str  # the team pages, CSVs and index, which the exporter serves on /reports/


@dataclass(frozen=True)
class Config:
    path: str
    collector: Source
    source: str
    prometheus_url: str
    prometheus_timeout: float
    cloudwatch_regions: tuple[str, ...]
    cloudwatch_endpoint_url: str
    database: Database
    days: int
    min_samples: int
    interval: float
    state_file: str
    listen_host: str
    listen_port: int
    register: Register
    findings: Findings
    reports: Reports


def _path(m: _Map, key: str, default: str | None = None) -> str:
    value = m.string(key, default)
    if not ABSOLUTE_PATH.fullmatch(value) or any(part in (".", "..") for part in value.split("/")):
        raise m.error(key, "must be an absolute path of letters, digits and . _ - / (no . or .. parts)")
    return value


def _password(m: _Map, path: str) -> str:
    """The password file's first line; its text is never shown in an error."""
    try:
        with open(path, encoding="utf-8") as f:
            password = f.readline().rstrip("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(m.path, m.name("password_file"), f"cannot be read: {e}", path) from None
    if not password:
        raise ConfigError(m.path, m.name("password_file"), "holds no password (its first line is empty)", path)
    return password


def _database(m: _Map) -> Database:
    driver = m.string("driver", "sqlite")
    if driver not in DRIVERS:
        raise m.error("driver", f"must be one of {', '.join(DRIVERS)}")
    if driver == "sqlite":
        path = _path(m, "path", "/var/lib/infra-obs-cost/cost.db")
        m.done()
        return Database("sqlite", path=path)
    host = m.label("host", "127.0.0.1", grammar=HOST_NAME)
    name = m.string("name", "infra_obs_cost")
    if not DATABASE_NAME.fullmatch(name):
        raise m.error("name", "must be 1 to 64 ASCII letters, digits and _")
    user = m.string("user", "infra_obs_cost")
    if not DATABASE_USER.fullmatch(user):
        raise m.error("user", "must be 1 to 80 ASCII letters, digits and . _ -")
    port = m.integer("port", 3306, 1, 65535)
    password_file = _path(m, "password_file")
    m.done()  # every other key is refused before the password file is read
    return Database("mysql", host=host, port=port, name=name, user=user, password=_password(m, password_file))


def _findings(m: _Map) -> Findings:
    enabled = m.boolean("enabled", True)
    policy_file = _path(m, "policy_file", "/") if m.has("policy_file") else ""
    prices_file = _path(m, "prices_file", "/") if m.has("prices_file") else ""
    instance_types = m.boolean("instance_types", False)
    m.done()
    return Findings(enabled, load_policy(policy_file, prices_file), instance_types)


def _reports(m: _Map, findings: Findings, state_file: str) -> Reports:
    enabled = m.boolean("enabled", findings.enabled)
    if enabled and not findings.enabled:
        raise m.error("enabled", "needs findings.enabled: the reports are the findings'")
    directory = _path(m, "directory", os.path.join(os.path.dirname(state_file), "reports"))
    m.done()
    return Reports(enabled, directory)


def parse(data: Any, path: str) -> Config:
    top = _Map(path, "", data)
    c = top.sub("collector")
    collector = Source(
        c.label("name", os.uname().nodename[:63] or "collector", grammar=HOST_NAME),
        c.label("region", "", True),
        c.label("az", "", True),
    )
    c.done()
    source = top.string("source", "prometheus")
    if source not in SOURCES:
        raise top.error("source", f"must be one of {', '.join(SOURCES)}")
    p = top.sub("prometheus")
    prometheus_url = _url(p, "url", "http://127.0.0.1:9090")
    prometheus_timeout = p.number("timeout", 120, 0, 3600, low_open=True)
    p.done()
    w = top.sub("cloudwatch")
    regions = w.labels("regions", ())
    for region in regions:
        if not REGION.fullmatch(region):
            raise ConfigError(path, w.name("regions"), "must be AWS region names such as eu-central-1", region)
    endpoint = w.string("endpoint_url", "", allow_empty=True)
    if endpoint:
        endpoint = _url(w, "endpoint_url", "")
    w.done()
    if source == "cloudwatch" and not regions:
        raise ConfigError(path, "cloudwatch.regions", "must name at least one region for the cloudwatch source", [])
    database = _database(top.sub("database"))
    listen_host, listen_port = _listen(top, "127.0.0.1:9312")
    register = _register(top.sub("register"), collector, listen_port, "infra-obs-cost", ("metrics", "cost"))
    state_file = _path(top, "state_file", "/var/lib/infra-obs-cost/state.json")
    findings = _findings(top.sub("findings"))
    config = Config(
        path=path,
        collector=collector,
        source=source,
        prometheus_url=prometheus_url,
        prometheus_timeout=prometheus_timeout,
        cloudwatch_regions=regions,
        cloudwatch_endpoint_url=endpoint,
        database=database,
        days=top.integer("days", 14, 1, 62),
        min_samples=top.integer("min_samples", 144, 1, 86400 // SAMPLE_PERIOD),
        interval=top.number("interval", 86400, 60, 7 * 86400),
        state_file=state_file,
        listen_host=listen_host,
        listen_port=listen_port,
        register=register,
        findings=findings,
        reports=_reports(top.sub("reports"), findings, state_file),
    )
    top.done()
    return config


def load(path: str) -> Config:
    return parse(read_yaml(path), path)
