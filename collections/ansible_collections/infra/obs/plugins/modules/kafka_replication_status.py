#!/usr/bin/python
# Copyright: infra.obs maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: kafka_replication_status
short_description: MirrorMaker 2 replication lag and per-group rollback readiness
description:
  - Reads, with kafka-python, the end offsets of the replicated topics on the source and the target cluster of a
    MirrorMaker 2 flow, the groups' committed offsets on the source, the newest checkpoint per group and partition
    from MM2's checkpoints topic on the target, and whether each group has members on either cluster.
  - "Lag per partition is counted by the records themselves, not by offsets: the last record of its replica on the
    target (the same topic name with the identity policy, C(<source_alias><separator><topic>) with the prefixed
    one) is found on the source by timestamp, key, value and headers, and every source record after it counts as
    not replicated. MM2 writes each partition in order, so the records before it are on the target. After an MM2
    crash the target holds duplicates and its end offset runs ahead of the source's; they are counted
    (C(duplicates)), never taken for progress."
  - "MM2's liveness is its heartbeats (see O(max_mm2_silence)): while MM2 is down nothing can roll back."
  - "A group can roll back (C(can_roll_back) in RV(groups)) when MM2 is alive and, for every partition of a selected
    topic it has committed on the source: the lag is at most O(max_lag), and the newest checkpoint is not ahead of
    the committed
    offset and either translates exactly that offset or is at most O(max_checkpoint_age) seconds old; and it has no
    active member on the target (where M(infra.obs.kafka_group_rollback) would refuse). MM2 writes a checkpoint
    only when a translation changes, so an idle group keeps an old checkpoint that still matches its commit. With
    O(max_reread), each checkpoint must also translate to at most that many records before the commit."
  - "Where a partition's checkpoint fails these rules, its translation by records stands in (as
    M(infra.obs.kafka_group_rollback) makes it: the last record the group read and the first it has not, found on
    the target by timestamp, key, value and headers), re-reading at most O(max_reread) records; C(by_records) in
    the partition's row shows it."
  - Read-only. Run it where kafka-python is installed (the controller or a utility host), not on the brokers.
version_added: 0.1.0
extends_documentation_fragment:
  - infra.obs.kafka_mm2
  - infra.obs.attributes.kafka_client
  - infra.obs.attributes.read_only
author: infra.obs maintainers (@infra-obs)
requirements:
  - kafka-python >= 3.0
options:
  source:
    description: Connection to the source cluster.
    required: true
  topics:
    description: Source topics of the flow. One of O(topics) and O(topics_regex) is required.
    type: list
    elements: str
  topics_regex:
    description: A regular expression that source topic names must match in full (internal C(__*) topics never do).
    type: str
  groups:
    description: Consumer groups to judge.
    type: list
    elements: str
    default: []
  max_lag:
    description: Largest lag in records per partition that still counts as caught up.
    type: int
    default: 100
  max_checkpoint_age:
    description: Seconds a checkpoint that lags behind the group's commit may be old.
    type: int
    default: 300
  max_reread:
    description:
      - With the identity policy (both logs line up offset for offset), the most records per partition a rollback
        may re-read, the committed offset minus the checkpoint's downstream offset. MM2's first checkpoint after a
        burst can translate from an offset sync hundreds of records back; a newer one, once the tail's offset sync
        is written (every C(offset.flush.interval.ms)), is closer, unless the source was written to meanwhile (MM2
        keeps fewer offset syncs the further back they are). Unset, not checked.
    type: int
  require_stopped_on_source:
    description: A group with active members on the source cannot roll back (a reason); the gate of a planned
      rollback, where the team stops the consumers first.
    type: bool
    default: false
  emit_heartbeats_seconds:
    description: The flow's C(emit.heartbeats.interval.seconds) (C(flow.intervals.emit_heartbeats_seconds) of
      M(infra.obs.mm2_config)); MM2's default.
    type: int
    default: 1
  emit_checkpoints_seconds:
    description: The flow's C(emit.checkpoints.interval.seconds) (C(flow.intervals.emit_checkpoints_seconds));
      MM2's default.
    type: int
    default: 60
  max_mm2_silence:
    description:
      - Seconds without a heartbeat of the flow (from O(source_alias), in the target's C(heartbeats) topic) after
        which MM2 counts as down, a reason in every group's verdict and C(can_roll_back) false. MM2's heartbeat
        connector writes one every O(emit_heartbeats_seconds) whether records flow or not.
      - Default three times the larger of O(emit_heartbeats_seconds) and O(emit_checkpoints_seconds). Ages are
        read against the clock of the host running the module.
    type: int
  wait:
    description: Seconds to keep judging, every O(wait_interval) seconds, until everything can roll back; the
      result is the last judgement.
    type: int
    default: 0
  wait_interval:
    description: Seconds between judgements while O(wait) lasts.
    type: int
    default: 5
  fail_when_unsafe:
    description: Fail, naming each group that cannot roll back and why (and the lag, when it exceeds O(max_lag)),
      once O(wait) is over.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Gate the rollback of the orders consumers
  infra.obs.kafka_replication_status:
    source: {bootstrap_servers: ["kafka-a1:9092"]}
    target:
      bootstrap_servers: ["kafka-b1:9093"]
      security_protocol: SASL_SSL
      sasl_mechanism: SCRAM-SHA-512
      username: rollback-orders
      password: "{{ vault_rollback_orders_password }}"
      ssl_cafile: /etc/kafka/ca.pem
    source_alias: primary
    topics_regex: 'orders\..*'
    groups: [orders-app]
    max_lag: 10
    max_reread: 10
    fail_when_unsafe: true
  delegate_to: localhost
"""

RETURN = r"""
topics:
  description: The source topics judged.
  returned: success
  type: list
  elements: str
partitions:
  description: Per source partition, C(topic), C(partition), C(target_topic), C(source_end), C(target_end) (null
    while the replica does not exist), C(replicated_through) (the source offset of the target's last record, null
    when the target holds none or it is not on the source), C(lag) (source records after it; null when it is not on
    the source, C(problem) saying so) and C(duplicates) (target records beyond the source's, up to it).
  returned: success
  type: list
  elements: dict
unproven_partitions:
  description: Problems of partitions whose replication cannot be proven by their records (C(lag) null).
  returned: success
  type: list
  elements: str
duplicates_total:
  description: Sum of the duplicates on the target (MM2 writes some again after a crash).
  returned: success
  type: int
mm2:
  description: MM2's liveness, C(alive), C(heartbeat_age_seconds) (null without any heartbeat of the flow),
    C(max_silence_seconds) and C(reason) (null while alive).
  returned: success
  type: dict
lag_total:
  description: Sum of the lags.
  returned: success
  type: int
lag_max:
  description: Largest lag of one partition.
  returned: success
  type: int
lag_ok:
  description: Whether every partition's lag is known and at most O(max_lag).
  returned: success
  type: bool
checkpoints_topic:
  description: The checkpoints topic read on the target.
  returned: success
  type: str
groups:
  description:
    - Per group, C(can_roll_back), C(reasons) (one line per problem), C(active_on_source), C(ignored_partitions)
      (committed partitions of topics outside the selection) and C(partitions), each with C(topic), C(partition),
      C(committed) (on the source), C(lag) and C(checkpoint) (null, or C(upstream_offset), C(downstream_offset),
      C(metadata), C(timestamp_ms) and C(age_seconds)); where the checkpoint failed, C(by_records) (null when the
      records are not found on the target, else C(new_offset) and C(reread)).
  returned: success
  type: dict
unsafe_groups:
  description: The groups that cannot roll back now.
  returned: success
  type: list
  elements: str
can_roll_back:
  description: Whether MM2 is alive, the lag is within O(max_lag) everywhere and every group can roll back.
  returned: success
  type: bool
"""

# Ansible modules import below their documentation.
import time  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.infra.obs.plugins.module_utils.kafka_mm2 import (  # noqa: E402
    CONNECTION_OPTIONS,
    CONNECTION_REQUIRED_IF,
    FLOW_OPTIONS,
    LIVENESS_OPTIONS,
    CheckpointLog,
    Cluster,
    KafkaMM2Error,
    replication_status,
    require_kafka,
)


def main():
    connection = dict(type="dict", required=True, options=CONNECTION_OPTIONS, required_if=CONNECTION_REQUIRED_IF)
    module = AnsibleModule(
        argument_spec=dict(
            source=connection,
            target=connection,
            **FLOW_OPTIONS,
            topics=dict(type="list", elements="str"),
            topics_regex=dict(type="str"),
            groups=dict(type="list", elements="str", default=[]),
            max_lag=dict(type="int", default=100),
            max_checkpoint_age=dict(type="int", default=300),
            max_reread=dict(type="int"),
            require_stopped_on_source=dict(type="bool", default=False),
            **LIVENESS_OPTIONS,
            wait=dict(type="int", default=0),
            wait_interval=dict(type="int", default=5),
            fail_when_unsafe=dict(type="bool", default=False),
        ),
        mutually_exclusive=[("topics", "topics_regex")],
        required_one_of=[("topics", "topics_regex")],
        supports_check_mode=True,
    )
    require_kafka(module)
    params = module.params
    try:
        deadline = time.monotonic() + params["wait"]
        checkpoints = CheckpointLog()  # while it waits, each judgement reads only the checkpoints written since
        with Cluster(params["source"]) as source, Cluster(params["target"]) as target:
            result = replication_status(source, target, params, checkpoints)
            while not result["can_roll_back"] and time.monotonic() + params["wait_interval"] <= deadline:
                time.sleep(params["wait_interval"])
                result = replication_status(source, target, params, checkpoints)
    except KafkaMM2Error as error:
        module.fail_json(msg=str(error))
    except Exception as error:  # kafka-python's errors: an unreachable cluster, refused credentials, ...
        module.fail_json(msg=f"{type(error).__name__}: {error}")
    if params["fail_when_unsafe"] and not result["can_roll_back"]:
        problems = [f"{group}: {'; '.join(result['groups'][group]['reasons'])}" for group in result["unsafe_groups"]]
        if result["lag_max"] > params["max_lag"]:
            problems.insert(0, f"replication lag up to {result['lag_max']} records (max_lag {params['max_lag']})")
        problems[:0] = result["unproven_partitions"]
        if not result["mm2"]["alive"] and not result["unsafe_groups"]:
            problems.insert(0, result["mm2"]["reason"])
        waited = f" after {params['wait']} s" if params["wait"] else ""
        module.fail_json(msg=f"not safe to roll back{waited}: " + " | ".join(problems), **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
