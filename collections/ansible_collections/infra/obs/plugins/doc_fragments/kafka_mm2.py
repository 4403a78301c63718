# Copyright: infra.obs maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The MirrorMaker 2 flow and cluster connection options shared by the Kafka modules (module_utils/kafka_mm2.py
holds their argument spec)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  source:
    description: Connection to the source cluster.
    type: dict
    suboptions: &connection
      bootstrap_servers:
        description: C(host:port) of one or more brokers.
        type: list
        elements: str
        required: true
      security_protocol:
        description: How to connect.
        type: str
        default: PLAINTEXT
        choices: [PLAINTEXT, SSL, SASL_SSL]
      sasl_mechanism:
        description: SCRAM mechanism, with O(source.security_protocol=SASL_SSL).
        type: str
        choices: [SCRAM-SHA-256, SCRAM-SHA-512]
      username:
        description: SCRAM user name, with O(source.security_protocol=SASL_SSL).
        type: str
      password:
        description: SCRAM password, with O(source.security_protocol=SASL_SSL).
        type: str
      ssl_cafile:
        description: PEM file of the CA certificates to trust (kafka-python does not read Java keystores).
        type: path
      ssl_certfile:
        description: PEM client certificate, for clusters that require one.
        type: path
      ssl_keyfile:
        description: PEM private key of O(source.ssl_certfile).
        type: path
      ssl_password:
        description: Password of O(source.ssl_keyfile).
        type: str
      ssl_check_hostname:
        description: Whether the broker certificate must match its host name.
        type: bool
        default: true
  target:
    description: Connection to the target cluster, with the same suboptions as O(source).
    type: dict
    required: true
    suboptions: *connection
  source_alias:
    description: The source cluster's alias in the flow (it names the checkpoints topic and prefixed topics).
    type: str
    required: true
  replication_policy:
    description: The flow's replication policy.
    type: str
    default: identity
    choices: [identity, prefixed]
  separator:
    description: The prefixed policy's separator.
    type: str
    default: "."
  checkpoints_topic:
    description:
      - MM2's checkpoints topic on the target; defaults to C(<source_alias>.checkpoints.internal) (with the prefixed
        policy the separator replaces both dots).
      - Set it if MM2 runs with C(replication.policy.internal.topic.separator.enabled=false).
    type: str
"""
