"""The MM2 team-file loader refuses bad input with an error naming the file, the key path, the value and why; the
rendered mm2.properties says exactly what MirrorMaker 2 should do, escaped as Java reads it, and passwords only
ever appear in it."""

import copy
import json
import random
import re
import shutil
import subprocess

import pytest
from ansible_collections.infra.obs.plugins.plugin_utils.mm2 import (
    MASK,
    java_regex_problem,
    load,
    mask_secrets,
    render_properties,
)
from ansible_collections.infra.obs.plugins.plugin_utils.userdata import ProblemsError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FILE = "teams/orders.yml"
PASSWORD = 'p"a\\ss wörd$1'  # a quote, a backslash, a space and a non-ASCII letter: every escaping layer at once
SECRETS = {"standby_password": PASSWORD, "trust_password": "trust-pw-7", "key_password": "key-pw-9"}
GOOD = {
    "clusters": {
        "primary": {"bootstrap_servers": ["kafka-a1.lab:9092", "kafka-a2.lab:9092", "kafka-a3.lab:9092"], "brokers": 3},
        "standby": {
            "bootstrap_servers": ["kafka-b1.lab:9093", "[fd00::b2]:9093"],
            "brokers": 2,
            "security": {
                "protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512",
                "username": "mm2-orders",
                "password_var": "standby_password",
                "truststore": "/etc/mm2/truststore.p12",
            },
        },
    },
    "flow": {
        "source": "primary",
        "target": "standby",
        "topics": {"include": [r"orders\..*"], "exclude": [r"orders\.scratch\..*"]},
        "groups": {"include": ["orders-.*"]},
    },
}


def mutate(*changes):
    """GOOD with each (path, value) applied; value KeyError deletes the key."""
    data = copy.deepcopy(GOOD)
    for path, value in changes:
        target = data
        for key in path[:-1]:
            target = target.setdefault(key, {})
        if value is KeyError:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return data


def properties(text):
    """java.util.Properties.load for what render_properties writes: one `key = value` a line, backslash escapes
    (held to Java's own reading by test_java_reads_what_we_meant)."""
    result = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith(("#", "!")):
            continue
        key, _sep, value = line.partition(" = ")
        value = re.sub(
            r"\\(u[0-9a-fA-F]{4}|.)",
            lambda m: chr(int(m.group(1)[1:], 16)) if len(m.group(1)) == 5 else {"t": "\t", "n": "\n"}.get(m[1], m[1]),
            value,
        )
        result[key] = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le")  # \\u pairs beyond U+FFFF
    return result


def render(data, secrets=None):
    return properties(render_properties(load([(FILE, data)]), SECRETS if secrets is None else secrets))


def m(*changes):
    """mutate() with dotted paths ("flow.topics.include.0"), given as path, value, path, value, ..."""
    pairs = zip(changes[::2], changes[1::2], strict=True)
    return mutate(*(([int(k) if k.isdigit() else k for k in path.split(".")], value) for path, value in pairs))


SASL = "clusters.standby.security"
SERVER = "clusters.primary.bootstrap_servers"
TOPICS = "flow.topics.include"
PLAIN = {"protocol": "PLAINTEXT"}
SECRET = "Sup3r secret!"
# (data, key path the error must name, words the reason must contain)
BAD = [
    (["not", "a", "mapping"], "(top level)", "must be a mapping"),
    (m("flows", {}), "flows", "unknown key"),
    (m("clusters", ["primary", "standby"]), "clusters", "must be a mapping"),
    (m("clusters.primary", "kafka-a1.lab:9092"), "clusters.primary", "must be a mapping"),
    (m("clusters.primary.broker", 3), "clusters.primary.broker", "unknown key"),
    (m("clusters.primary.description", "two\nlines"), "clusters.primary.description", "single line"),
    (mutate((["clusters", "primary.dc1"], {})), "clusters.primary.dc1", "MM2 puts them in topic names"),
    (mutate((["clusters", "a" * 65], {})), "clusters.aaa", "up to 64"),
    (m(SERVER, "kafka-a1.lab:9092"), SERVER, "list of host:port"),
    (m(SERVER, []), SERVER, "at least one"),
    (m(f"{SERVER}.0", "kafka-a1.lab"), f"{SERVER}[0]", "must be host:port"),
    (m(f"{SERVER}.0", "kafka-a1.lab:99999"), f"{SERVER}[0]", "port from 1 to 65535"),
    (m(f"{SERVER}.0", "fd00::a1:9092"), f"{SERVER}[0]", "IPv6 as [address]:port"),
    (m(f"{SERVER}.0", "kafka_a1.lab:9092"), f"{SERVER}[0]", "must be host:port"),
    (m(f"{SERVER}.0", "kafka-a1.lab:9092\n"), f"{SERVER}[0]", "must be host:port"),
    # An IPv6 zone id smuggled three servers past the duplicate and self-replication checks as one.
    (m(f"{SERVER}.0", "[fe80::1%x]:1,b1:9092,[::1]:9092"), f"{SERVER}[0]", "no zone id"),
    (m(f"{SERVER}.0", "[fe80::1%lo]:9092"), f"{SERVER}[0]", "no zone id"),
    (m(f"{SERVER}.0", "kafka-a1.lab:\u0669\u0660\u0669\u0662"), f"{SERVER}[0]", "must be host:port"),
    (m(f"{SERVER}.0", "kafka-a1.lab:9092;x"), f"{SERVER}[0]", "must be host:port"),
    (m(f"{SERVER}.0", 'kafka-a1.lab:9092"'), f"{SERVER}[0]", "must be host:port"),
    (m(f"{SERVER}.0", "kafka-{a1}.lab:9092"), f"{SERVER}[0]", "must be host:port"),
    (m(f"{SERVER}.0", "a" * 300 + ".lab:9092"), f"{SERVER}[0]", "must be host:port"),
    (m(f"{SERVER}.0", 9092), f"{SERVER}[0]", "must be host:port"),
    (m(f"{SERVER}.1", "kafka-a1.lab:9092"), f"{SERVER}[1]", "listed twice"),
    (m("clusters.primary.brokers", 0), "clusters.primary.brokers", "from 1 to 32767"),
    (m("clusters.primary.brokers", 10**30), "clusters.primary.brokers", "from 1 to 32767"),
    (m("clusters.primary.brokers", "3"), "clusters.primary.brokers", "whole number"),
    (m("clusters.primary.brokers", True), "clusters.primary.brokers", "whole number"),
    (m("clusters.primary.brokers", KeyError), "clusters.primary.brokers", "whole number"),
    (m("clusters.primary.security", "PLAINTEXT"), "clusters.primary.security", "must be a mapping"),
    (m("clusters.primary.security.protocol", "SASL_PLAINTEXT"), "clusters.primary.security.protocol", "only over TLS"),
    (
        m("clusters.primary.security", PLAIN | {"username": "u"}),
        "clusters.primary.security.username",
        "only for protocol SASL_SSL",
    ),
    (
        m("clusters.primary.security", PLAIN | {"truststore": "/t"}),
        "clusters.primary.security.truststore",
        "only for protocols SSL",
    ),
    (m(f"{SASL}.protocol", "SSL"), f"{SASL}.username", "only for protocol SASL_SSL, not SSL"),
    (m(f"{SASL}.sasl", True), f"{SASL}.sasl", "unknown key"),
    (m(f"{SASL}.sasl_mechanism", "PLAIN"), f"{SASL}.sasl_mechanism", "SCRAM-SHA-256, SCRAM-SHA-512"),
    (m(f"{SASL}.username", KeyError), f"{SASL}.username", "needs a username"),
    (m(f"{SASL}.password_var", KeyError), f"{SASL}.password_var", "must name the Ansible variable"),
    (m(f"{SASL}.password_var", SECRET), f"{SASL}.password_var", "never the password"),
    (m(f"{SASL}.password", SECRET), f"{SASL}.password", "name that variable in password_var"),
    (m("clusters.primary.sasl_secret", SECRET), "clusters.primary.sasl_secret", "secrets never go in this file"),
    (m("clusters.primary.extra", {"token": SECRET}), "clusters.primary.extra", "unknown key"),
    # A secret under a key that does not look secret: a JAAS line, a PEM key, a key named pwd.
    (
        m("clusters.primary.sasl_jaas_config", f'ScramLoginModule required username="mm2" password="{SECRET}";'),
        "clusters.primary.sasl_jaas_config",
        "unknown key",
    ),
    (m("clusters.primary.pwd", SECRET), "clusters.primary.pwd", "secrets never go in this file"),
    (
        m("clusters.primary.description", f"-----BEGIN PRIVATE KEY-----\n{SECRET}\n-----END PRIVATE KEY-----"),
        "clusters.primary.description",
        "single line",
    ),
    (m("flow.description", {"note": f"PassWord = {SECRET}"}), "flow.description", "single line"),
    (m(f"{SASL}.truststore", "etc/mm2/truststore.p12"), f"{SASL}.truststore", "absolute path"),
    (m(f"{SASL}.keystore", "/etc/mm2/keystore.p12"), f"{SASL}.keystore_password_var", "must name the Ansible variable"),
    (m(f"{SASL}.keystore_password_var", "key_password"), f"{SASL}.keystore_password_var", "only with keystore"),
    (m("flow", ["primary", "standby"]), "flow", "must be a mapping"),
    (m("flow.topic", {}), "flow.topic", "unknown key"),
    (m("flow.description", ["x"]), "flow.description", "single line"),
    (m("flow.source", "primary-dc"), "flow.source", "unknown cluster alias"),
    (m("flow.target", KeyError), "flow.target", "unknown cluster alias"),
    (m("flow.target", "primary"), "flow.target", "replicate a cluster into itself"),
    (m("clusters.standby.bootstrap_servers", ["kafka-a2.lab:9092"]), "flow.target", "shares bootstrap servers"),
    (m("flow.topics", KeyError), TOPICS, "at least one"),
    (m(TOPICS, []), TOPICS, "at least one"),
    (m("flow.topics.includes", ["x"]), "flow.topics.includes", "unknown key"),
    (m(TOPICS, r"orders\..*"), TOPICS, "list of regular expressions"),
    (m(TOPICS, [5]), f"{TOPICS}[0]", "must be a regular expression"),
    (m(TOPICS, ["orders("]), f"{TOPICS}[0]", "not a regular expression"),
    (m(TOPICS, [" orders"]), f"{TOPICS}[0]", "surrounding whitespace"),
    (m(TOPICS, ["\x01orders"]), f"{TOPICS}[0]", "control character"),
    (m(TOPICS, ["ord\x00ers"]), f"{TOPICS}[0]", "control character"),
    (m(TOPICS, ["o{1,3}"]), f"{TOPICS}[0]", "splits these lists on commas"),
    (m(TOPICS, ["(?P<team>orders)"]), f"{TOPICS}[0]", "Python-only"),
    (m(TOPICS, ["orders(?#comment)"]), f"{TOPICS}[0]", "no (?#...) comments"),
    (m(TOPICS, ["(?(1)a|b)"]), f"{TOPICS}[0]", "no conditional groups"),
    (m(TOPICS, ["(?a)orders"]), f"{TOPICS}[0]", "flags a and L are Python-only"),
    (m(TOPICS, ["(?x)orders[ ]"]), f"{TOPICS}[0]", "with x Java also skips blanks"),
    (m(TOPICS, [r"orders\U0001F600"]), f"{TOPICS}[0]", "\\U escapes"),
    (m(TOPICS, [r"orders\0"]), f"{TOPICS}[0]", "octal"),
    (m(TOPICS, ["orders{eu}"]), f"{TOPICS}[0]", "{n} repetition"),
    (m(TOPICS, [r"orders[\b.]"]), f"{TOPICS}[0]", "backspace"),
    (m("flow.topics.exclude", ["[a-z[0-9]]"]), "flow.topics.exclude[0]", "nested class"),
    (m("flow.topics.exclude", ["[a-z&&e]"]), "flow.topics.exclude[0]", "reads this differently"),
    (m("flow.groups.exclude", ["*-test"]), "flow.groups.exclude[0]", "not a regular expression"),
    (m("flow.groups", ["orders-.*"]), "flow.groups", "must be a mapping"),
    (m("flow.replication_policy", "mirror"), "flow.replication_policy", "identity, prefixed"),
    (m("flow.separator", "_"), "flow.separator", "only with replication_policy: prefixed"),
    (m("flow.replication_policy", "prefixed", "flow.separator", ""), "flow.separator", "at least one"),
    (m("flow.replication_policy", "prefixed", "flow.separator", "->"), "flow.separator", "goes into topic names"),
    (m("flow.failback", {"enabled": True, "keep_forward": True}), "flow.failback.keep_forward", "both ways at once"),
    (
        m("flow.replication_policy", "prefixed", "flow.failback", {"keep_forward": True}),
        "flow.failback.keep_forward",
        "only with flow.failback.enabled",
    ),
    (m("flow.failback", {"enabled": "yes"}), "flow.failback.enabled", "true or false"),
    (m("flow.failback", {"auto": True}), "flow.failback.auto", "unknown key"),
    (m("flow.failback", True), "flow.failback", "must be a mapping"),
    (m("flow.replication_factor", 3), "flow.replication_factor", "larger than standby's 2 broker(s)"),
    (m("flow.replication_factor", 0), "flow.replication_factor", "from 1 to 32767"),
    (
        m("flow.replication_factor", 2, "clusters.primary.brokers", 1, "flow.failback", {"enabled": True}),
        "flow.replication_factor",
        "larger than primary's 1 broker(s)",
    ),
    (m("flow.intervals.emit_checkpoints_seconds", 0), "flow.intervals.emit_checkpoints_seconds", "from 1 to 3600"),
    (m("flow.intervals.refresh_topics_seconds", 600000), "flow.intervals.refresh_topics_seconds", "to 86400"),
    (m("flow.intervals.refresh_seconds", 5), "flow.intervals.refresh_seconds", "unknown key"),
    (m("flow.offset_lag_max", -1), "flow.offset_lag_max", "from 0 to 2147483647"),
    (m("flow.offset_lag_max", 2**31), "flow.offset_lag_max", "from 0 to 2147483647"),
    (m("flow.tasks_max", 0), "flow.tasks_max", "from 1 to 1000"),
    (m("flow.sync_group_offsets", "true"), "flow.sync_group_offsets", "true or false"),
    (m("flow.sync_topic_configs", None), "flow.sync_topic_configs", "true or false"),
]


@pytest.mark.parametrize(("data", "key", "why"), BAD, ids=[f"{i}:{c[1]}" for i, c in enumerate(BAD)])
def test_bad_input_names_file_key_value_and_why(data, key, why):
    with pytest.raises(ProblemsError) as caught:
        load([(FILE, data)])
    problems = caught.value.problems
    assert any(p.file == FILE and p.key.startswith(key) and why in p.why for p in problems), problems
    assert all(str(p).startswith(f"{FILE}: ") for p in problems)
    assert SECRET not in str(caught.value), "a secret was echoed"


def test_every_problem_is_reported_at_once():
    data = m("clusters.primary.brokers", 0, TOPICS, ["orders("], "flow.replication_factor", 3)
    with pytest.raises(ProblemsError) as caught:
        load([(FILE, data)])
    keys = {p.key for p in caught.value.problems}
    assert {"clusters.primary.brokers", "flow.topics.include[0]", "flow.replication_factor"} <= keys


def test_clusters_may_come_from_a_shared_file_but_each_alias_only_once():
    shared = {"clusters": GOOD["clusters"]}
    team = {"flow": GOOD["flow"]}
    flow = load([("mm2/clusters.yml", shared), ("mm2/orders.yml", team)])
    assert (flow.file, flow.source.file) == ("mm2/orders.yml", "mm2/clusters.yml")
    text = render_properties(flow, SECRETS)
    assert "# Cluster standby (mm2/clusters.yml)" in text and "from\n# mm2/orders.yml: do not edit" in text

    clash = {"clusters": {"standby": GOOD["clusters"]["standby"]}, "flow": GOOD["flow"]}
    with pytest.raises(ProblemsError) as caught:
        load([("mm2/clusters.yml", shared), ("mm2/orders.yml", clash)])
    (problem,) = caught.value.problems
    assert (problem.file, problem.key, problem.value) == ("mm2/orders.yml", "clusters.standby", "standby")
    assert problem.why == "alias already defined in mm2/clusters.yml"


def test_exactly_one_flow_across_the_files():
    with pytest.raises(ProblemsError) as caught:
        load([("mm2/clusters.yml", {"clusters": GOOD["clusters"]})])
    assert [(p.key, p.why) for p in caught.value.problems] == [
        ("flow", "no file defines the flow (source, target, topics)")
    ]
    with pytest.raises(ProblemsError) as caught:
        load([("mm2/a.yml", GOOD), ("mm2/b.yml", {"flow": GOOD["flow"]})])
    (problem,) = caught.value.problems
    assert problem.file == "mm2/b.yml" and "already defined in mm2/a.yml" in problem.why


def test_plaintext_renders_exactly():
    data = m(
        "clusters.standby",
        {"bootstrap_servers": ["kafka-b1.lab:9092"], "brokers": 1},
        "flow.intervals",
        {"emit_checkpoints_seconds": 5, "refresh_topics_seconds": 10},
        "flow.offset_lag_max",
        10,
    )
    text = render_properties(load([(FILE, data)]), {})
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert text == render_properties(load([(FILE, copy.deepcopy(data))]), {}), "not deterministic"
    assert properties(text) == {
        "clusters": "primary, standby",
        "primary.bootstrap.servers": "kafka-a1.lab:9092,kafka-a2.lab:9092,kafka-a3.lab:9092",
        "primary.security.protocol": "PLAINTEXT",
        "standby.bootstrap.servers": "kafka-b1.lab:9092",
        "standby.security.protocol": "PLAINTEXT",
        "primary->standby.enabled": "true",
        "primary->standby.emit.heartbeats.enabled": "true",
        "standby->primary.enabled": "false",
        "standby->primary.emit.heartbeats.enabled": "false",
        "topics": r"orders\..*",
        "topics.exclude": r"orders\.scratch\..*, .*[\-\.]internal, .*\.replica, __.*",
        "groups": "orders-.*",
        "groups.exclude": "console-consumer-.*, connect-.*, __.*",
        "replication.policy.class": "org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
        "replication.factor": "1",
        "checkpoints.topic.replication.factor": "1",
        "heartbeats.topic.replication.factor": "1",
        "offset-syncs.topic.replication.factor": "1",
        "config.storage.replication.factor": "1",
        "offset.storage.replication.factor": "1",
        "status.storage.replication.factor": "1",
        "offset-syncs.topic.location": "target",
        "emit.offset-syncs.enabled": "true",
        "emit.checkpoints.enabled": "true",
        "offset.lag.max": "10",
        "sync.group.offsets.enabled": "false",
        "refresh.topics.interval.seconds": "10",
        "refresh.groups.interval.seconds": "600",
        "emit.checkpoints.interval.seconds": "5",
        "emit.heartbeats.interval.seconds": "1",
        "sync.group.offsets.interval.seconds": "60",
        "standby.offset.flush.interval.ms": "60000",
        "sync.topic.configs.enabled": "true",
        "sync.topic.acls.enabled": "false",
        "dedicated.mode.enable.internal.rest": "false",
        "tasks.max": "1",
    }
    # Regexes reach Java with their backslashes: the file doubles them.
    assert r"topics = orders\\..*" in text


def test_ssl_renders_truststore_and_keystore():
    security = {
        "protocol": "SSL",
        "truststore": "/etc/mm2/truststore.p12",
        "truststore_password_var": "trust_password",
        "keystore": "/etc/mm2/keystore.p12",
        "keystore_password_var": "key_password",
    }
    rendered = render(m(SASL, security))
    assert {k: v for k, v in rendered.items() if k.startswith("standby.")} == {
        "standby.bootstrap.servers": "kafka-b1.lab:9093,[fd00::b2]:9093",
        "standby.security.protocol": "SSL",
        "standby.ssl.truststore.location": "/etc/mm2/truststore.p12",
        "standby.ssl.truststore.password": "trust-pw-7",
        "standby.ssl.keystore.location": "/etc/mm2/keystore.p12",
        "standby.ssl.keystore.password": "key-pw-9",
        "standby.offset.flush.interval.ms": "60000",
    }


def test_sasl_ssl_scram_renders_the_jaas_config_with_the_password_escaped():
    rendered = render(GOOD)
    assert {k: v for k, v in rendered.items() if k.startswith("standby.")} == {
        "standby.bootstrap.servers": "kafka-b1.lab:9093,[fd00::b2]:9093",
        "standby.security.protocol": "SASL_SSL",
        "standby.sasl.mechanism": "SCRAM-SHA-512",
        "standby.sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="mm2-orders" password="p\\"a\\\\ss wörd$1";',
        "standby.ssl.truststore.location": "/etc/mm2/truststore.p12",
        "standby.offset.flush.interval.ms": "60000",
    }
    assert rendered["primary.security.protocol"] == "PLAINTEXT"


def test_identity_keeps_names_and_prefixed_sets_the_separator():
    identity = render(GOOD)
    assert identity["replication.policy.class"] == "org.apache.kafka.connect.mirror.IdentityReplicationPolicy"
    assert "replication.policy.separator" not in identity
    assert load([(FILE, GOOD)]).summary()["checkpoints"] == [
        {"cluster": "standby", "topic": "primary.checkpoints.internal"}
    ]
    # Every interval, MM2's defaults filled in for those the file leaves out: the rollback gate reads them here.
    summary = load([(FILE, m("flow.intervals", {"emit_checkpoints_seconds": 5}))]).summary()
    assert summary["intervals"] == dict(
        refresh_topics_seconds=600,
        refresh_groups_seconds=600,
        emit_checkpoints_seconds=5,
        emit_heartbeats_seconds=1,
        sync_group_offsets_seconds=60,
        offset_flush_seconds=60,
    )

    data = m("flow.replication_policy", "prefixed", "flow.separator", "_")
    prefixed = render(data)
    assert prefixed["replication.policy.class"] == "org.apache.kafka.connect.mirror.DefaultReplicationPolicy"
    assert prefixed["replication.policy.separator"] == "_"
    assert load([(FILE, data)]).summary()["checkpoints"] == [
        {"cluster": "standby", "topic": "primary_checkpoints_internal"}
    ]


def test_nothing_writes_to_the_source_until_failback_which_switches_the_direction():
    forward = render(GOOD)
    assert (forward["primary->standby.enabled"], forward["standby->primary.enabled"]) == ("true", "false")
    assert forward["standby->primary.emit.heartbeats.enabled"] == "false"
    assert forward["offset-syncs.topic.location"] == "target"

    data = m("flow.failback", {"enabled": True})
    back = render(data)
    assert back["primary->standby.enabled"] == back["primary->standby.emit.heartbeats.enabled"] == "false"
    assert back["standby->primary.enabled"] == back["standby->primary.emit.heartbeats.enabled"] == "true"
    summary = load([(FILE, data)]).summary()
    assert (summary["source"], summary["target"], summary["enabled"]) == ("primary", "standby", ["standby->primary"])
    assert summary["checkpoints"] == [{"cluster": "primary", "topic": "standby.checkpoints.internal"}]


def test_prefixed_failback_may_keep_the_forward_flow():
    data = m("flow.replication_policy", "prefixed", "flow.failback", {"enabled": True, "keep_forward": True})
    both = render(data)
    flows = ("primary->standby", "standby->primary")
    assert all(both[f"{a}.{p}"] == "true" for a in flows for p in ("enabled", "emit.heartbeats.enabled"))
    assert both["replication.factor"] == "2", "must fit both clusters written to"


@pytest.mark.parametrize(
    ("source_brokers", "target_brokers", "failback", "expected"),
    [(3, 1, False, 1), (3, 2, False, 2), (5, 5, False, 3), (1, 5, False, 3), (1, 5, True, 1), (2, 1, True, 2)],
)
def test_replication_factor_defaults_to_at_most_three_on_the_cluster_written_to(
    source_brokers, target_brokers, failback, expected
):
    data = m(
        "clusters.primary.brokers",
        source_brokers,
        "clusters.standby.brokers",
        target_brokers,
        "flow.failback",
        {"enabled": failback},
    )
    flow = load([(FILE, data)])
    assert flow.replication_factor == expected
    assert set(render(data).items()) >= {(name, str(expected)) for name in flow.summary()["replication_factors"]}


def test_explicit_replication_factor_is_rendered_everywhere():
    rendered = render(m("flow.replication_factor", 1))
    factors = {k: v for k, v in rendered.items() if k.endswith("replication.factor")}
    assert len(factors) == 7 and set(factors.values()) == {"1"}


def test_group_offset_sync_is_off_unless_asked_for():
    assert render(GOOD)["sync.group.offsets.enabled"] == "false"
    assert render(m("flow.sync_group_offsets", True))["sync.group.offsets.enabled"] == "true"


def test_secrets_are_only_in_the_rendered_file_and_masked_in_what_is_shown():
    security = GOOD["clusters"]["standby"]["security"] | {
        "truststore_password_var": "trust_password",
        "keystore": "/etc/mm2/keystore.p12",
        "keystore_password_var": "key_password",
    }
    flow = load([(FILE, m(SASL, security))])
    for shown in (repr(flow), json.dumps(flow.summary())):
        assert not any(secret in shown for secret in SECRETS.values())
    text = render_properties(flow, SECRETS)
    rendered = properties(text)
    assert (rendered["standby.ssl.truststore.password"], rendered["standby.ssl.keystore.password"]) == (
        "trust-pw-7",
        "key-pw-9",
    )
    masked = mask_secrets(text)
    assert masked.count(MASK) == 3 and mask_secrets(masked) == masked
    assert not any(secret in masked or secret in properties(masked).values() for secret in SECRETS.values())
    assert 'ScramLoginModule required username="mm2-orders" password=********' in masked
    # What is on a host may be written by hand: other spacing, other keys, continuation lines.
    before = "x.ssl.key.password=old-1\nx.sasl.jaas.config=...ScramLoginModule required \\\n  password='old-2';\n"
    assert "old-" not in mask_secrets(before)


def test_missing_or_unusable_password_variable_is_named_never_shown():
    flow = load([(FILE, GOOD)])
    with pytest.raises(ProblemsError) as caught:
        render_properties(flow, {})
    (problem,) = caught.value.problems
    assert (problem.file, problem.key, problem.value) == (FILE, f"{SASL}.password_var", "standby_password")
    assert "no variable standby_password is defined" in problem.why
    for bad in ("two\nlines", "", 12345, None):
        with pytest.raises(ProblemsError) as caught:
            render_properties(flow, {"standby_password": bad})
        assert "one-line string" in str(caught.value) and "two" not in str(caught.value)


def test_common_patterns_are_accepted():
    for pattern in (r"orders\..*", "(?i)orders", "[a-z0-9_-]+", r"orders\.(eu|us)\..*", "a{3}", "[]a]", r"\{x\}"):
        assert java_regex_problem(pattern) is None, pattern


PATHS = [
    "flowz",
    *(
        f"clusters.{key}"
        for key in ("primary", "primary.bootstrap_servers", "primary.brokers", "primary.security", "x")
    ),
    f"{SERVER}.0",
    *(f"{SASL}.{key}" for key in ("protocol", "sasl_mechanism", "username", "password_var", "truststore")),
    *(f"{SASL}.{key}" for key in ("keystore", "truststore_password_var", "keystore_password_var", "password")),
    "flow",
    *(f"flow.{key}" for key in ("source", "target", "topics", "groups", "replication_policy", "separator")),
    *(f"flow.{key}" for key in ("replication_factor", "intervals", "offset_lag_max", "tasks_max", "failback")),
    *(f"flow.{key}" for key in ("sync_group_offsets", "sync_topic_configs", "description")),
    *(TOPICS, f"{TOPICS}.0", "flow.groups.exclude", "flow.intervals.emit_checkpoints_seconds", "flow.failback.enabled"),
]
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=400, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATHS), JUNK)
def test_junk_anywhere_is_refused_cleanly(path, junk):
    data = m(path, junk)
    try:
        flow = load([(FILE, data)])
        text = render_properties(flow, SECRETS)
    except ProblemsError as error:
        assert error.problems and all(str(p).startswith(f"{FILE}: ") for p in error.problems)
        assert PASSWORD not in str(error)
        return
    assert text.endswith("\n") and PASSWORD not in mask_secrets(text)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.text(min_size=1).filter(lambda s: not re.search(r"[\x00-\x1f\x7f]", s)))
def test_any_one_line_password_round_trips_through_the_escaping(password):
    jaas = render(GOOD, {"standby_password": password})["standby.sasl.jaas.config"]
    quoted = re.fullmatch(r'.* password="((?:[^"\\]|\\.)*)";', jaas, re.DOTALL).group(1)
    assert re.sub(r"\\(.)", r"\1", quoted) == password


JAVA = shutil.which("java")
# Java's own readers, to hold the Python stand-ins above to them: java.util.Properties (as MirrorMaker loads the
# file, from an InputStream: ISO-8859-1) and the StreamTokenizer setup of Kafka's JaasConfig.
READER = r"""
import java.io.*;
import java.util.*;
import java.util.regex.*;

public class Reader {
    static String show(String s) { return s.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t"); }

    public static void main(String[] args) throws Exception {
        PrintStream out = new PrintStream(System.out, true, "UTF-8");
        if (args[0].equals("properties")) {
            Properties props = new Properties();
            try (InputStream in = new FileInputStream(args[1])) { props.load(in); }
            for (String key : new TreeSet<>(props.stringPropertyNames())) {
                String value = props.getProperty(key);
                out.println(key + "\t" + show(value));
                if (key.endsWith("sasl.jaas.config")) {
                    StreamTokenizer t = new StreamTokenizer(new StringReader(value));
                    t.slashSlashComments(true); t.slashStarComments(true);
                    t.wordChars('-', '-'); t.wordChars('_', '_'); t.wordChars('$', '$');
                    t.nextToken(); t.nextToken();
                    while (t.nextToken() != StreamTokenizer.TT_EOF && t.ttype != ';') {
                        String option = t.sval; t.nextToken(); t.nextToken();
                        out.println(key + "#" + option + "\t" + show(t.sval));
                    }
                }
            }
        } else {
            String[] samples = Arrays.copyOfRange(args, 1, args.length);
            BufferedReader in = new BufferedReader(new InputStreamReader(System.in, "UTF-8"));
            for (String line; (line = in.readLine()) != null; ) {
                try {
                    Pattern p = Pattern.compile(line);
                    StringBuilder m = new StringBuilder();
                    for (String s : samples) m.append(p.matcher(s).matches() ? '1' : '0');
                    out.println(m);
                } catch (PatternSyntaxException e) { out.println("error"); }
            }
        }
    }
}
"""


def java(tmp_path, *args, stdin=""):
    source = tmp_path / "Reader.java"
    source.write_text(READER)
    run = subprocess.run(
        [JAVA, str(source), *args], input=stdin, capture_output=True, text=True, encoding="utf-8", check=False
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()


@pytest.mark.skipif(JAVA is None, reason="no java on this host")
def test_java_reads_what_we_meant(tmp_path):
    security = GOOD["clusters"]["standby"]["security"] | {"truststore_password_var": "trust_password"}
    flow = load([(FILE, m(SASL, security, TOPICS, [r"orders\.ü.*"]))])
    secrets = SECRETS | {"trust_password": " leading space\\"}
    path = tmp_path / "mm2.properties"
    path.write_text(render_properties(flow, secrets), encoding="utf-8")
    seen = dict(line.split("\t", 1) for line in java(tmp_path, "properties", str(path)))
    seen = {k: re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m[1], m[1]), v) for k, v in seen.items()}
    ours = properties(path.read_text(encoding="utf-8"))
    assert {k: v for k, v in seen.items() if "#" not in k} == ours
    assert seen["standby.sasl.jaas.config#username"] == "mm2-orders"
    assert seen["standby.sasl.jaas.config#password"] == PASSWORD
    assert seen["standby.ssl.truststore.password"] == " leading space\\"
    assert seen["topics"] == r"orders\.ü.*"


SAMPLES = [*"ab2A{}&", "ab", "aa", "ba", "a b", "A#", "a.b", "a-b", "a_b", "a2", "orders", "orders.v1", "__x"]
ALPHABET = [*"ab.*+?|()[]^$-{}2&_:=!<>#Pix ", *(rf"\{c}" for c in "d.w{[0Ub")]


@pytest.mark.skipif(JAVA is None, reason="no java on this host")
def test_patterns_we_accept_mean_the_same_to_java(tmp_path):
    """A differential test: random patterns over regex metacharacters; each one we accept must compile in Java and
    match the same sample names as Python's re."""
    rng = random.Random(5)
    patterns = sorted({"".join(rng.choices(ALPHABET, k=rng.randint(1, 9))) for _pattern in range(20000)})
    verdicts = java(tmp_path, "regex", *SAMPLES, stdin="\n".join(patterns) + "\n")
    accepted = 0
    for pattern, verdict in zip(patterns, verdicts, strict=True):
        if java_regex_problem(pattern) is not None:
            continue
        accepted += 1
        ours = "".join("1" if re.fullmatch(pattern, s) else "0" for s in SAMPLES)
        assert verdict == ours, f"{pattern!r}: Java {verdict}, Python {ours}"
    assert accepted > 2000, "the generator should produce many valid patterns"
