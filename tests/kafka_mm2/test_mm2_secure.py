"""MirrorMaker 2, the rollback modules and the readiness check over SCRAM-SHA-512 and TLS, for real: two KRaft
clusters whose client listener takes SCRAM over TLS only (credentials formatted into their metadata, a throwaway CA
and keys made by openssl and keytool), the lab's orders flow with security blocks, rendered with its passwords
into the properties a real MM2 runs. 10,000 keyed records; a group reads half on the source; the status, the
rollback (through Ansible) and the readiness check all connect as a SCRAM user over TLS; on the target the group
reads every record it had not read. The test's own producers and consumers use the brokers' PLAINTEXT listener.
"""

import pytest
from ansible_collections.infra.obs.plugins.module_utils import kafka_mm2
from kafka.errors import KafkaError

from .kafka_lab import STORE_PASSWORD, KafkaNode, make_tls
from .test_mm2_readiness import readiness
from .test_mm2_rollback import (
    FIRST_PRODUCED,
    GROUP,
    MESSAGES,
    PARAMS,
    TOPIC,
    Lab,
    playbook_task,
    produce,
    read_and_commit,
    read_on_target,
    task_result,
    wait_for,
)

USERS = {"mm2": "mm2-S3cret!pass", "rollback": "rb-S3cret!pass"}


class SecureLab(Lab):
    def __init__(self, base):
        super().__init__(base)
        self.tls = make_tls(base / "tls")
        self.primary = KafkaNode(base, "primary", tls=self.tls, scram_users=USERS)
        self.standby = KafkaNode(base, "standby", libs=self.primary.libs, tls=self.tls, scram_users=USERS)

    def team(self):
        team = super().team()
        for alias, node in (("primary", self.primary), ("standby", self.standby)):
            team["clusters"][alias]["bootstrap_servers"] = [node.secure_bootstrap]
            team["clusters"][alias]["security"] = dict(
                protocol="SASL_SSL",
                sasl_mechanism="SCRAM-SHA-512",
                username="mm2",
                password_var="mm2_password",
                truststore=str(self.tls["truststore"]),
                truststore_password_var="mm2_truststore_password",
            )
        return team

    def secrets(self):
        return {"mm2_password": USERS["mm2"], "mm2_truststore_password": STORE_PASSWORD}

    def connection(self, node, password=USERS["rollback"]):
        """How the rollback user connects, as the modules take it."""
        return kafka_mm2.connection_params(
            [node.secure_bootstrap],
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            username="rollback",
            password=password,
            ssl_cafile=str(self.tls["ca"]),
        )

    def status(self, groups=(GROUP,), max_reread=None, topic=TOPIC):
        params = dict(
            PARAMS, topics=[topic], groups=list(groups), max_lag=0, max_checkpoint_age=0, max_reread=max_reread
        )
        with (
            kafka_mm2.Cluster(self.connection(self.primary)) as source,
            kafka_mm2.Cluster(self.connection(self.standby)) as target,
        ):
            return kafka_mm2.replication_status(source, target, params)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = SecureLab(tmp_path_factory.mktemp("mm2-secure"))
    try:
        yield lab.start()
    finally:
        lab.stop()


@pytest.fixture(scope="module")
def first_read(lab):
    produce(lab.primary, 0, FIRST_PRODUCED)
    read = read_and_commit(lab.primary, GROUP, FIRST_PRODUCED // 2)
    produce(lab.primary, FIRST_PRODUCED, MESSAGES)
    return read


def test_the_secure_listener_takes_the_right_password_only(lab):
    with readiness.cluster(lab.connection(lab.primary)) as source:
        assert TOPIC in source.topics()
    # kafka-python reports a refused SCRAM login as a bootstrap that never completes.
    with pytest.raises(KafkaError), readiness.cluster(lab.connection(lab.primary, password="not-it")) as source:
        source.topics()


def test_mm2_replicates_and_the_group_rolls_back_over_scram_and_tls(lab, first_read, playbook):
    properties = (lab.base / "mm2" / "mm2.properties").read_text()
    assert "primary.security.protocol = SASL_SSL" in properties and "SCRAM-SHA-512" in properties
    status = wait_for(
        "MM2 to copy everything and the group to be able to roll back, read over SCRAM and TLS",
        lambda: lab.status(max_reread=None),
        lambda s: s["can_roll_back"],
        timeout=180,
        log=lab.mm2_log,
    )
    assert status["mm2"]["alive"] is True
    assert sum(row["source_end"] for row in status["partitions"]) == MESSAGES
    assert status["duplicates_total"] == 0

    def secure(node):
        connection = lab.connection(node)
        return {k: v for k, v in connection.items() if v is not None}

    args = dict(group=GROUP, source=secure(lab.primary), target=secure(lab.standby), source_alias="primary")
    run = playbook(playbook_task("infra.obs.kafka_group_rollback", args))
    assert run.rc == 0, run.output
    result = task_result(run)
    assert result["changed"] is True
    assert USERS["rollback"] not in run.output, "the password is no_log"
    read_on_target(lab, GROUP, first_read, result["plan"])

    direction = readiness.load(str(lab.base / "mm2" / "mm2.properties"), str(lab.tls["ca"]))[0]
    options = readiness.arguments(["--properties", "p", "--flow", "orders", "--max-lag", "0"])
    check = readiness.check(direction, options)
    assert check["success"] is True, check["error"]
    assert check["mm2"]["alive"] is True and check["topic_lag"] == {TOPIC: 0}
    assert check["groups"][GROUP]["can_roll_back"] is True
