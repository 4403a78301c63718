"""The probe alerts localise a fault the way Pingmesh reads its matrix: on synthetic source x destination loss
matrices, exactly one alert fires and it names the faulty destination host or AZ, the source host or AZ, or the
single path, with the exporters' team (what Alertmanager routes on); a healthy matrix fires nothing. promtool
evaluates the shipped rules."""

import pathlib
import re
import subprocess

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
RULES = REPO / "roles/probe_exporter/files/rules/probe_exporter.rules.yml"
HOSTS = {  # host: (region, az); two AZs have two hosts, so an AZ fault can be told from a host fault
    "h1": ("eu-central-1", "eu-central-1a"),
    "h2": ("eu-central-1", "eu-central-1a"),
    "h3": ("eu-central-1", "eu-central-1b"),
    "h4": ("us-east-1", "us-east-1a"),
    "h5": ("us-east-1", "us-east-1b"),
    "h6": ("us-east-1", "us-east-1b"),
}
LOCALISING = [
    "InfraObsProbeDestinationAZLoss",
    "InfraObsProbeSourceAZLoss",
    "InfraObsProbeDestinationLoss",
    "InfraObsProbeSourceLoss",
    "InfraObsProbePathLoss",
]
PROBES_PER_MINUTE = 60
TEAM = "network"  # the exporters' registration meta, a label on every series they export


def annotations(alertname: str, labels: dict, value: str) -> dict:
    """The alert's annotations as Prometheus renders them (the forms the rules use: labels and one $value)."""
    rules = yaml.safe_load(RULES.read_text())
    (rule,) = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == alertname]
    rendered = {}
    for key, text in rule["annotations"].items():
        with_labels = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
        rendered[key] = re.sub(r"\{\{ \$value \| humanizePercentage \}\}", value, with_labels)
    return rendered


def matrix_series(lossy) -> list[dict]:
    """Sent and received counters of every path, over 20 minutes; lossy(src, dst) is a path's loss ratio."""
    series = []
    for src, (src_region, src_az) in HOSTS.items():
        for dst, (dst_region, dst_az) in HOSTS.items():
            if src == dst:
                continue
            labels = (
                f'team="{TEAM}", node="{src}", src_region="{src_region}", src_az="{src_az}", dst_host="{dst}", '
                f'dst_region="{dst_region}", dst_az="{dst_az}", target="{dst}.lab", probe="icmp"'
            )
            received = round(PROBES_PER_MINUTE * (1 - lossy(src, dst)))
            series.append({"series": f"infra_obs_probe_sent_total{{{labels}}}", "values": f"0+{PROBES_PER_MINUTE}x20"})
            series.append({"series": f"infra_obs_probe_received_total{{{labels}}}", "values": f"0+{received}x20"})
    return series


def az_of(host):
    return HOSTS[host][1]


SCENARIOS = {
    "healthy": (lambda s, d: 0.0, None),
    "destination host": (
        lambda s, d: 0.2 if d == "h3" else 0.0,
        ("InfraObsProbeDestinationLoss", {"dst_host": "h3", "dst_region": "eu-central-1", "dst_az": "eu-central-1b"}),
    ),
    "source host": (
        lambda s, d: 0.2 if s == "h4" else 0.0,
        ("InfraObsProbeSourceLoss", {"node": "h4", "src_region": "us-east-1", "src_az": "us-east-1a"}),
    ),
    "destination AZ": (
        lambda s, d: 0.3 if az_of(d) == "us-east-1b" and az_of(s) != "us-east-1b" else 0.0,
        ("InfraObsProbeDestinationAZLoss", {"dst_region": "us-east-1", "dst_az": "us-east-1b"}),
    ),
    "source AZ": (
        lambda s, d: 0.3 if az_of(s) == "eu-central-1a" and az_of(d) != "eu-central-1a" else 0.0,
        ("InfraObsProbeSourceAZLoss", {"src_region": "eu-central-1", "src_az": "eu-central-1a"}),
    ),
    "single path": (
        lambda s, d: 0.5 if (s, d) == ("h1", "h5") else 0.0,  # the summary says "loses 50%"
        (
            "InfraObsProbePathLoss",
            {
                "node": "h1",
                "src_region": "eu-central-1",
                "src_az": "eu-central-1a",
                "dst_host": "h5",
                "dst_region": "us-east-1",
                "dst_az": "us-east-1b",
                "target": "h5.lab",
            },
        ),
    ),
    # Loss just under the 5% line on every path is no fault anywhere.
    "background loss": (lambda s, d: 0.03, None),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_one_alert_names_the_fault(tmp_path, scenario):
    lossy, expected = SCENARIOS[scenario]
    severities = {"InfraObsProbeDestinationAZLoss": "critical", "InfraObsProbeSourceAZLoss": "critical"}
    checks = []
    for alertname in LOCALISING:
        alerts = []
        if expected and expected[0] == alertname:
            labels = {"severity": severities.get(alertname, "warning"), "team": TEAM, **expected[1]}
            alerts = [{"exp_labels": labels, "exp_annotations": annotations(alertname, labels, "50%")}]
        checks.append({"eval_time": "15m", "alertname": alertname, "exp_alerts": alerts})
    case = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {"name": scenario, "interval": "1m", "input_series": matrix_series(lossy), "alert_rule_test": checks}
        ],
    }
    (tmp_path / "case.yml").write_text(yaml.safe_dump(case, sort_keys=False))
    result = subprocess.run(["promtool", "test", "rules", str(tmp_path / "case.yml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
