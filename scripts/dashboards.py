"""The Grafana dashboards the roles ship (roles/*/files/dashboards/*.json), checked without a Grafana server:
against Grafana's dashboard schema, and by running every panel query against a real Prometheus.

Grafana's schema cannot express an annotation query of any data source but Grafana's own (its AnnotationTarget is,
by its own TODO, a placeholder for a data source's query): the dashboards' Prometheus annotation queries are taken
out before the schema check and checked here instead, against the fields Grafana's Prometheus data source reads."""

import json
import os
import pathlib
import re

import requests
from labinfo import prometheus_query

REPO = pathlib.Path(__file__).resolve().parent.parent
CACHE = pathlib.Path(os.environ.get("INFRA_OBS_CACHE", "/var/cache/infra-obs"))
# What Grafana substitutes for its built-in interval variables, at the lab's 15 s scrape interval.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
LABEL_VALUES = re.compile(r"^label_values\((?:(.+),\s*)?(\w+)\)$")


# What a Prometheus annotation query may hold (Grafana's Prometheus data source: expression, step, series value as
# the event's time, title and tags from labels), and the one every dashboard carries: deployments, from the delivery
# pipeline's metric (docs/pipeline.md), each at the time its run ended.
ANNOTATION_KEYS = {
    "datasource",
    "enable",
    "expr",
    "iconColor",
    "name",
    "step",
    "tagKeys",
    "titleFormat",
    "useValueForTime",
}
DEPLOYMENTS = "Deployments"


def dashboards() -> list[pathlib.Path]:
    return sorted(REPO.glob("roles/*/files/dashboards/*.json"))


def schema_path() -> pathlib.Path:
    versions = (REPO / "inventories/lab/group_vars/all/versions.yml").read_text()
    version = re.search(r'^grafana_schema_version: "([^"]+)"', versions, re.M).group(1)
    return CACHE / "grafana" / f"dashboard-{version}.schema.json"


def panels(dashboard: dict) -> list[dict]:
    """Every panel, including those nested in collapsed rows."""
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found += panel.get("panels", [])
    return found


def annotation_queries(dashboard: dict) -> list[dict]:
    """The dashboard's Prometheus annotation queries."""
    return [a for a in dashboard.get("annotations", {}).get("list", []) if "expr" in a]


def for_schema(dashboard: dict) -> dict:
    """The dashboard without its Prometheus annotation queries, which the schema cannot express (checked apart)."""
    rest = [a for a in dashboard.get("annotations", {}).get("list", []) if "expr" not in a]
    return {**dashboard, "annotations": {**dashboard.get("annotations", {}), "list": rest}}


def query_targets(dashboard: dict) -> list[tuple[str, dict]]:
    """(panel title, target) of every query target."""
    return [(p["title"], t) for p in panels(dashboard) for t in p.get("targets", []) if "expr" in t]


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL expression) of every query target."""
    return [(title, target["expr"]) for title, target in query_targets(dashboard)]


def variable_queries(dashboard: dict) -> list[tuple[str, str, str]]:
    """(variable name, series selector, label) of every Prometheus `label_values(selector, label)` variable."""
    found = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable["type"] == "query":
            match = LABEL_VALUES.match(variable["query"])
            if not match:
                raise ValueError(f"variable {variable['name']}: only label_values(selector, label) is supported")
            found.append((variable["name"], match.group(1) or "", match.group(2)))
    return found


def instantiate(expr: str, values: dict[str, str]) -> str:
    """The expression as Grafana sends it: built-in intervals filled in, template variables replaced by `values`
    (a variable without a value matches everything, as "All" does)."""

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        return BUILTINS.get(name) or values.get(name, ".*")

    return VARIABLE.sub(value, expr)


def label_values_request(selector: str, label: str, values: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The API path and parameters of `label_values(selector, label)` as Grafana asks Prometheus for it."""
    return f"/api/v1/label/{label}/values", {"match[]": instantiate(selector, values)} if selector else {}


def queries_without_data(prometheus_url: str, path: pathlib.Path, values: dict[str, str]) -> list[tuple[str, str]]:
    """(panel title or variable name, query) of each panel query and template variable that finds nothing in the
    Prometheus at prometheus_url."""
    dashboard = json.loads(path.read_text())
    empty = []
    for name, selector, label in variable_queries(dashboard):
        api_path, params = label_values_request(selector, label, values)
        response = requests.get(prometheus_url + api_path, params=params, timeout=10)
        response.raise_for_status()
        if not response.json()["data"]:
            empty.append((name, f"label_values({selector}, {label})"))
    for title, expr in queries(dashboard):
        query = instantiate(expr, values)
        if not prometheus_query(prometheus_url, query):
            empty.append((title, query))
    return empty


def queries_without_data_at(urls: list[str], path: pathlib.Path, values: dict[str, str]) -> list[tuple[str, str, str]]:
    """(url, panel title or variable name, query) of each query that finds nothing at one of urls: a Prometheus and
    Thanos query over it must both answer every one."""
    return [(url, *empty) for url in urls for empty in queries_without_data(url, path, values)]
