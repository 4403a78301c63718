#!/usr/bin/python
# Copyright: infra.obs maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: kafka_group_rollback
short_description: Move a consumer group to the MirrorMaker 2 target, translating its offsets from MM2's checkpoints
description:
  - Reads MM2's checkpoints topic on the target with kafka-python, keeps the newest checkpoint per partition of
    O(group), and commits each checkpoint's downstream offset as the group's offset on the target, without joining
    the group. Then reads the group's offsets back and fails unless they are the plan's.
  - "MM2 translates offsets only at its offset-sync points, rounding down, and keeps fewer of them the further back
    they are: a group stopped while the source is still written to can get a checkpoint hundreds of records back,
    or none. So where a partition's checkpoint is missing, ahead of the group's commit on the source, or re-reads
    more than O(max_reread) records, and O(source) is given, the partition is translated by its records instead:
    the last record the group read is found on the target (MM2 keeps timestamps: offsetsForTimes, then the same
    key, value and headers) and the group starts just after its first copy, once the first record it has not read
    is found there too (C(origin=records), C(reread) counts the copies before it, such as MM2's duplicates after a
    crash)."
  - Refuses while the group has active members on the target (the broker would refuse their offsets too), and
    while it has active members on the source unless O(allow_active_source) is true (they would keep consuming
    there after the plan was made).
  - "A partition the group has committed on the source that neither a checkpoint nor its records translate is
    refused, unless it has no checkpoint and O(missing) says where to start it: V(earliest) (re-read the target's
    log) or V(latest) (skip what it holds)."
  - "Without O(source) (the source is down: an unplanned rollback) the plan covers every partition of the topics
    (O(topics), else those the group has checkpoints for) as the target has them: a partition MM2 did not
    checkpoint cannot be told from one the group never read, so those need O(missing) (refused, named, by default).
    Neither the source commits nor the source membership are checked."
  - Idempotent, nothing changes when the group's target offsets already are the plan's.
  - Run it where kafka-python is installed (the controller or a utility host), not on the brokers.
version_added: 0.1.0
extends_documentation_fragment:
  - infra.obs.kafka_mm2
  - infra.obs.attributes.kafka_client
author: infra.obs maintainers (@infra-obs)
requirements:
  - kafka-python >= 3.0
options:
  group:
    description: The consumer group to roll back.
    type: str
    required: true
  source:
    description:
      - Connection to the source cluster, where the group's commits and members are read.
      - Without it (the source is down) the partitions without a checkpoint need O(missing).
  topics:
    description: Only these source topics of the group (default all it has checkpoints or commits for). Without
      O(source), every partition of these topics is planned.
    type: list
    elements: str
  missing:
    description: Where to start partitions without a checkpoint that the records cannot translate (the group
      committed them on the source; without O(source), every partition of its topics MM2 did not checkpoint).
    type: str
    default: fail
    choices: [fail, earliest, latest]
  max_reread:
    description:
      - The most records per partition a checkpoint may make the group read again (its committed offset minus the
        checkpoint's downstream offset; the identity policy lines the logs up). Partitions beyond it are translated
        by their records when O(source) is given.
      - Default no limit.
    type: int
  allow_active_source:
    description: Roll back even while the group has active members on the source (a warning is returned).
    type: bool
    default: false
attributes:
  check_mode:
    description: Returns the plan and whether it would change anything, without committing.
    support: full
  diff_mode:
    description: The group's target offsets per C(topic-partition), before and after.
    support: full
"""

EXAMPLES = r"""
- name: Show the plan
  infra.obs.kafka_group_rollback:
    group: orders-app
    source: {bootstrap_servers: ["kafka-a1:9092"]}
    target: {bootstrap_servers: ["kafka-b1:9092"]}
    source_alias: primary
  check_mode: true
  diff: true
  delegate_to: localhost

- name: Source down; start partitions without a checkpoint from the beginning
  infra.obs.kafka_group_rollback:
    group: orders-app
    target: {bootstrap_servers: ["kafka-b1:9092"]}
    source_alias: primary
    missing: earliest
  delegate_to: localhost
"""

RETURN = r"""
plan:
  description:
    - Per partition, C(topic) and C(target_topic), C(partition), C(source_committed) (null without O(source) or
      a commit there), C(checkpoint_upstream), C(checkpoint_downstream) and C(checkpoint_age_seconds) (null without
      a checkpoint), C(target_committed) (before), C(new_offset), C(origin) (V(checkpoint), V(records),
      V(earliest) or V(latest)) and C(reread), the records of the partition the group reads again (null where
      unknown, without a source commit or where O(missing) applied).
  returned: success
  type: list
  elements: dict
checkpoints_topic:
  description: The checkpoints topic read on the target.
  returned: success
  type: str
"""

# Ansible modules import below their documentation.
from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.infra.obs.plugins.module_utils.kafka_mm2 import (  # noqa: E402
    CONNECTION_OPTIONS,
    CONNECTION_REQUIRED_IF,
    FLOW_OPTIONS,
    Cluster,
    KafkaMM2Error,
    checkpoints_topic,
    is_active,
    plan_offsets,
    require_kafka,
    rollback_plan,
    tp_name,
)


def roll_back(module, source, target):
    params = module.params
    group = params["group"]
    state, members = target.group_state(group)
    if is_active(state, members):
        module.fail_json(
            msg=f"group {group} has {members} active member(s) on the target (state {state}): stop its consumers "
            "there before rolling back; their commits would overwrite the plan"
        )
    if source is not None:
        state, members = source.group_state(group)
        if is_active(state, members) and not params["allow_active_source"]:
            module.fail_json(
                msg=f"group {group} still has {members} active member(s) on the source (state {state}): stop its "
                "consumers there first (allow_active_source: true rolls back anyway; they keep consuming there)"
            )
        if is_active(state, members):
            module.warn(f"group {group} is still active on the source: records it reads there now are read again")
    plan = rollback_plan(source, target, params, group)
    offsets = plan_offsets(plan)
    before = {f"{row['target_topic']}-{row['partition']}": row["target_committed"] for row in plan}
    after = {tp_name(tp): offset for tp, offset in offsets.items()}
    changed = before != after
    if changed and not module.check_mode:
        target.alter_offsets(group, offsets)
        committed = target.committed(group)
        wrong = {tp_name(tp): committed.get(tp) for tp, offset in offsets.items() if committed.get(tp) != offset}
        if wrong:
            module.fail_json(msg=f"group {group}: offsets read back differ from the plan: {wrong}", plan=plan)
    result = dict(changed=changed, plan=plan, checkpoints_topic=checkpoints_topic(params))
    if module._diff:
        result["diff"] = dict(before=before, after=after)
    module.exit_json(**result)


def main():
    connection = dict(type="dict", options=CONNECTION_OPTIONS, required_if=CONNECTION_REQUIRED_IF)
    module = AnsibleModule(
        argument_spec=dict(
            group=dict(type="str", required=True),
            source=connection,
            target=dict(connection, required=True),
            **FLOW_OPTIONS,
            topics=dict(type="list", elements="str"),
            missing=dict(type="str", default="fail", choices=["fail", "earliest", "latest"]),
            max_reread=dict(type="int"),
            allow_active_source=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    require_kafka(module)
    source = Cluster(module.params["source"]) if module.params["source"] else None
    try:
        with Cluster(module.params["target"]) as target:
            roll_back(module, source, target)
    except KafkaMM2Error as error:
        module.fail_json(msg=str(error))
    except Exception as error:  # kafka-python's errors: an unreachable cluster, refused credentials, ...
        module.fail_json(msg=f"{type(error).__name__}: {error}")
    finally:
        if source is not None:
            source.close()


if __name__ == "__main__":
    main()
