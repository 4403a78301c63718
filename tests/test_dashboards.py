"""Every dashboard the roles ship is valid against Grafana's dashboard schema (from @grafana/schema, see
scripts/fetch-grafana-schema.sh), uses the Prometheus picked in its datasource variable, and every query is valid
PromQL (promtool). The molecule scenarios run the same queries against the lab's Prometheus and require data."""

import copy
import json
import subprocess

import jsonschema
import pytest
import yaml
from dashboards import (
    ANNOTATION_KEYS,
    BUILTINS,
    DEPLOYMENTS,
    VARIABLE,
    annotation_queries,
    dashboards,
    for_schema,
    instantiate,
    panels,
    queries,
    schema_path,
    variable_queries,
)

DASHBOARDS = dashboards()


@pytest.fixture(scope="module")
def validator():
    return jsonschema.Draft7Validator(json.loads(schema_path().read_text()))


def load(path):
    return json.loads(path.read_text())


def test_every_role_with_alerts_ships_a_dashboard():
    assert {p.parent.parent.parent.name for p in DASHBOARDS} >= {"mm2", "nginx_whitelist", "probe_exporter"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_valid_against_grafanas_schema(validator, path):
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(for_schema(load(path)))]
    assert not errors


def test_the_schema_cannot_express_a_prometheus_annotation_query(validator):
    """Why annotation queries are checked apart: the schema refuses the one it would have to take."""
    dashboard = load(DASHBOARDS[0])
    assert annotation_queries(dashboard)
    assert not validator.is_valid(dashboard)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_dashboard_marks_deployments_with_a_prometheus_annotation(path):
    found = annotation_queries(load(path))
    assert DEPLOYMENTS in [a["name"] for a in found]
    for annotation in found:
        assert set(annotation) <= ANNOTATION_KEYS, set(annotation) - ANNOTATION_KEYS
        assert annotation["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert isinstance(annotation["enable"], bool) and isinstance(annotation.get("useValueForTime", False), bool)
        for key in ("name", "expr", "iconColor", "step", "tagKeys", "titleFormat"):
            assert isinstance(annotation.get(key, ""), str), key


def test_schema_refuses_a_misspelled_key_and_a_wrong_type(validator):
    dashboard = load(DASHBOARDS[0])
    misspelled = copy.deepcopy(dashboard)
    misspelled["panels"][0]["gridpos"] = misspelled["panels"][0].pop("gridPos")
    wrong_type = copy.deepcopy(dashboard)
    wrong_type["schemaVersion"] = "39"
    assert not validator.is_valid(misspelled)
    assert not validator.is_valid(wrong_type)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panels_are_laid_out_and_use_the_chosen_prometheus(path):
    dashboard = load(path)
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert "datasource" in variables
    for panel in panels(dashboard):
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
        # A variable the query uses must exist, or Grafana would send it literally.
        for _title, expr in queries({"panels": [panel]}):
            for match in VARIABLE.finditer(expr):
                used = match.group(1) or match.group(2)
                assert used in variables or used in BUILTINS, (panel["title"], used)


def test_dashboard_uids_are_unique():
    uids = [load(p)["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_is_valid_promql(tmp_path, path):
    dashboard = load(path)
    exprs = [instantiate(expr, {}) for _title, expr in queries(dashboard)]
    exprs += [instantiate(a["expr"], {}) for a in annotation_queries(dashboard)]
    exprs += [instantiate(f"count({selector})", {}) for _name, selector, _label in variable_queries(dashboard)]
    rules = {"groups": [{"name": "q", "rules": [{"record": f"q:{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        ["promtool", "check", "rules", str(tmp_path / "queries.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
