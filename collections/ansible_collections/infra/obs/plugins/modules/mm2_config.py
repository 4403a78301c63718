#!/usr/bin/python
# Copyright: infra.obs maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# The work is done by the action plugin of the same name, on the controller. This file carries the documentation and
# hands the argument spec the action plugin validates with to AnsibleModule, so validate-modules compares the two.

from __future__ import annotations

DOCUMENTATION = r"""
module: mm2_config
short_description: Validate a team's Kafka MirrorMaker 2 flow and render its mm2.properties
description:
  - Reads the team's MM2 YAML (one file, or every C(.yml)/C(.yaml) file of a directory, which together define the
    clusters and exactly one flow) on the controller, validates it and renders C(mm2.properties) for a dedicated
    MirrorMaker 2 (C(org.apache.kafka.connect.mirror.MirrorMaker), Kafka 4.x).
  - Every error names the file, the key path, the value and why; nothing is written when there is any error.
  - "File format, top level C(clusters) and C(flow). C(clusters) maps each alias (letters, digits, C(_), C(-); MM2
    puts it in topic and property names; each alias once across all files) to C(bootstrap_servers) (a list of
    C(host:port), IPv6 as C([address]:port)), C(brokers) (the broker count; replication factors larger than the
    cluster MM2 writes to are refused), an optional C(description) and C(security)."
  - "C(security): C(protocol) is C(PLAINTEXT) (default), C(SSL) or C(SASL_SSL). C(SASL_SSL) needs C(sasl_mechanism)
    (C(SCRAM-SHA-256) or C(SCRAM-SHA-512)), C(username) and C(password_var). C(SSL) and C(SASL_SSL) take
    C(truststore) and C(keystore) (absolute paths on the MM2 host) with C(truststore_password_var) (optional) and
    C(keystore_password_var) (required with a keystore)."
  - "Passwords never go in the file: each C(*_password_var) is the B(name) of an Ansible variable (keep it in a
    vault) that holds the password for the host. A key that looks like a secret (C(password), C(secret), C(token),
    ...) is refused, and its value is not echoed. Passwords never appear in the result, the diff (they read
    C(********) there, before and after) or any message. Without O(dest) no password is looked up."
  - "C(flow): C(source) and C(target) (cluster aliases, different clusters), C(topics) and C(groups) with
    C(include) and C(exclude) lists of regular expressions (C(topics.include) is required, C(groups.include)
    defaults to V(.*)); MM2's own excludes (internal topics, C(__*), C(connect-*) groups) always apply as well.
    Patterns are checked with Python's re as a stand-in for java.util.regex, refusing what Java refuses or reads
    differently (Python-only named groups, comments and flags, nested classes, a C({) that is not a repetition,
    ...) and commas (MM2 splits its lists on them)."
  - "C(flow.replication_policy): V(identity) (default) keeps topic names, so consumers roll over to the other
    cluster with the same topic names; V(prefixed) names replicated topics C(<source><separator><topic>), with
    C(separator) (default C(.))."
  - "C(flow.replication_factor) for every topic MM2 creates (replicated topics, checkpoints, heartbeats, offset syncs
    and the Kafka Connect topics) defaults to the smaller of 3 and the broker count of the cluster MM2 writes to.
    C(flow.intervals) (C(refresh_topics_seconds) 600, C(refresh_groups_seconds) 600, C(emit_checkpoints_seconds) 60,
    C(emit_heartbeats_seconds) 1, C(sync_group_offsets_seconds) 60, C(offset_flush_seconds) 60: MM2's defaults;
    the lab shortens them. C(offset_flush_seconds) is Kafka Connect's offset commit, rendered for each cluster MM2
    writes to: MM2 holds back a partition's last offset sync until then, so a drained group's checkpoint is exact
    only after it),
    C(flow.offset_lag_max) (100), C(flow.tasks_max) (1), C(flow.sync_topic_configs) (true) and an optional
    C(description)."
  - "Nothing writes to the source: offset syncs go to the target (C(offset-syncs.topic.location = target)),
    the reverse flow is rendered disabled, and so are its heartbeats (a disabled flow's herder would otherwise
    still write heartbeats and its Kafka Connect topics into the source). The forward flow emits heartbeats into
    the target only."
  - "C(flow.sync_group_offsets) (default false) sets MM2's own C(sync.group.offsets.enabled). It stays off because
    M(infra.obs.kafka_group_rollback) translates each group's offsets from the checkpoints at cutover time and
    applies them while the group is inactive: one writer of group offsets on the target, and a plan that can be
    reviewed in check mode. Turn it on only for groups that do not use that module."
  - "C(flow.failback.enabled) (default false) is set after cutover: the flow then runs from target back to source and
    the forward flow is rendered disabled, since the identity policy cannot run both ways at once. With the
    prefixed policy, C(failback.keep_forward) keeps the forward flow running too. Failback copies each target topic
    from its start into the source topic of the same name, so the source gets the records it already had again
    (recreate those topics first if that matters)."
  - "Also rendered: checkpoints and offset syncs always on, C(sync.topic.acls.enabled = false) (ACLs stay with the
    platform's tooling; MM2's ACL sync needs ACL admin rights on the cluster it writes to and would write ACLs into
    the source on failback), C(dedicated.mode.enable.internal.rest = false) (one MM2 process per flow)."
version_added: 0.1.0
extends_documentation_fragment:
  - infra.obs.attributes.action_controller
author: infra.obs maintainers (@infra-obs)
options:
  src:
    description: The team's MM2 file, or a directory of them, on the controller.
    type: path
    required: true
  dest:
    description: Path of C(mm2.properties) on the host. Without it the module only validates, and needs no passwords.
    type: path
  mode:
    description: Mode of O(dest); the file holds passwords.
    type: raw
    default: "0600"
  owner:
    description: Owner of O(dest) (a name or a uid, e.g. the MM2 container's user); by default the connecting user.
    type: str
  group:
    description: Group of O(dest) (a name or a gid).
    type: str
attributes:
  check_mode:
    description: Validates, renders and reports whether O(dest) would change, without writing.
    support: full
  diff_mode:
    description: Shows the change to O(dest), with every password replaced by C(********).
    support: full
  platform:
    description: Renders on the controller and writes O(dest) on any POSIX host.
    support: full
    platforms: posix
"""

EXAMPLES = r"""
- name: Render the orders team's MM2 config onto the MM2 host
  infra.obs.mm2_config:
    src: mm2/orders.yml
    dest: /etc/infra-obs/mm2/orders/mm2.properties

- name: Validate every team file in CI (no passwords needed)
  infra.obs.mm2_config:
    src: inventories/lab/mm2/
  delegate_to: localhost

# inventories/lab/mm2/orders.yml, with a SASL_SSL target:
# clusters:
#   primary: {bootstrap_servers: ["kafka-a1:9092"], brokers: 3}
#   standby:
#     bootstrap_servers: ["kafka-b1:9093", "kafka-b2:9093", "kafka-b3:9093"]
#     brokers: 3
#     security:
#       protocol: SASL_SSL
#       sasl_mechanism: SCRAM-SHA-512
#       username: mm2-orders
#       password_var: vault_mm2_orders_standby_password
#       truststore: /etc/mm2/truststore.p12
# flow:
#   source: primary
#   target: standby
#   topics: {include: ['orders\..*'], exclude: ['orders\.scratch\..*']}
#   groups: {include: ['orders-.*']}
#   failback: {enabled: false}
"""

RETURN = r"""
flow:
  description: What the flow does, without secrets.
  returned: success
  type: dict
  contains:
    file:
      description: The file that defines the flow.
      type: str
    source:
      description: Source cluster alias.
      type: str
    target:
      description: Target cluster alias.
      type: str
    enabled:
      description: The replications MM2 runs, as C(from->to).
      type: list
      elements: str
    replication_policy:
      description: V(identity) or V(prefixed).
      type: str
    separator:
      description: Separator of prefixed topic names and of MM2's internal topic names.
      type: str
    replication_factors:
      description: Each replication-factor property rendered, and its value.
      type: dict
    checkpoints:
      description: For each enabled replication, the cluster and topic holding the checkpoints a rollback reads.
      type: list
      elements: dict
    topics:
      description: The topic include and exclude patterns, as written.
      type: dict
    groups:
      description: The group include and exclude patterns, as written.
      type: dict
    sync_group_offsets:
      description: Whether MM2's own group offset sync is on.
      type: bool
    intervals:
      description: Every interval in seconds by its C(flow.intervals) name, defaults filled in (the rollback gate
        judges MM2's liveness by the emit intervals).
      type: dict
    failback:
      description: Whether the failback flow is enabled.
      type: bool
    clusters:
      description: Bootstrap servers, broker count and protocol of the source and target.
      type: dict
dest:
  description: Where the properties were written.
  returned: when O(dest) is set
  type: str
problems:
  description: On failure, every problem found (file, key, value, why); values that may be secrets are masked.
  returned: failure
  type: list
  elements: dict
"""

from ansible_collections.infra.obs.plugins.module_utils._action_specs import MM2_CONFIG, refuse_without_action  # noqa: E402


def main():
    refuse_without_action("infra.obs.mm2_config", MM2_CONFIG)


if __name__ == "__main__":
    main()
