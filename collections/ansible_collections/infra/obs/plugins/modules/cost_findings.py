#!/usr/bin/python
# Copyright: infra.obs maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: cost_findings
short_description: A team's cost findings (under-used resources) with their evidence and savings
description:
  - "Returns the findings the cost collector stored for the newest evaluated window (or O(window_end)'s): resources
    a team could stop or shrink, by the rules of the collector's policy (low-utilisation EC2 after AWS Trusted
    Advisor, idle RDS, low memory or disk), each with the days and values that triggered it and, where its price is
    known, the monthly saving of stopping it."
  - Runs on a host of the C(cost_collectors) group (role M(infra.obs.cost_collector)), through the collector's own
    command C(infra-obs-cost findings) and its configuration, so it reads the same database with the same
    credentials. Read-only; it neither collects nor changes the schema.
version_added: 0.1.0
extends_documentation_fragment:
  - infra.obs.attributes.read_only
author: infra.obs maintainers (@infra-obs)
options:
  team:
    description: The team whose findings to return (its C(team) tag); all teams' when omitted.
    type: str
  window_end:
    description: The last day (YYYY-MM-DD) of the evaluated window; the newest stored when omitted.
    type: str
  config:
    description: The collector's configuration file.
    type: path
    default: /etc/infra-obs-cost/config.yml
  executable:
    description: The collector's command, by name on the C(PATH) (the role links it into C(/usr/local/bin)) or by path.
    type: path
    default: infra-obs-cost
"""

EXAMPLES = r"""
- name: Ask what the payments team could shut down
  infra.obs.cost_findings:
    team: payments
  delegate_to: "{{ groups['cost_collectors'][0] }}"
  become: true
  register: payments

- name: Show the monthly saving on offer
  ansible.builtin.debug:
    msg: "{{ payments.findings | map(attribute='monthly_saving') | select('number') | sum }} a month"
"""

RETURN = r"""
findings:
  description:
    - "One per resource and rule, sorted by team, rule, region and resource: C(account_id), C(region), C(service),
      C(resource_id), C(team), C(rule), C(window_end), C(days) (the window's length), C(matched_days), C(evidence)
      (a list of C([day, {condition: value}]), oldest first, e.g. C(cpu.avg) and C(network.sum)), C(instance_type)
      (empty when unknown) and C(monthly_saving) (null when the rule advises a resize or the type has no price)."
  returned: success
  type: list
  elements: dict
count:
  description: How many findings.
  returned: success
  type: int
monthly_saving:
  description: The sum of the findings' monthly savings that are known.
  returned: success
  type: float
"""

# Ansible modules import below their documentation.
import json  # noqa: E402
import re  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

# The collector's own grammars: a team tag and a day.
TEAM = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def main():
    module = AnsibleModule(
        argument_spec={
            "team": {"type": "str"},
            "window_end": {"type": "str"},
            "config": {"type": "path", "default": "/etc/infra-obs-cost/config.yml"},
            "executable": {"type": "path", "default": "infra-obs-cost"},
        },
        supports_check_mode=True,
    )
    team, window_end = module.params["team"], module.params["window_end"]
    if team is not None and not TEAM.fullmatch(team):
        module.fail_json(msg=f"team {team!r} is not a team name: lowercase letters, digits and . _ -, at most 63")
    if window_end is not None and not DAY.fullmatch(window_end):
        module.fail_json(msg=f"window_end {window_end!r} is not a day (YYYY-MM-DD)")
    executable = module.params["executable"]
    if "/" not in executable:
        executable = module.get_bin_path(executable, required=True)
    command = [executable, "--log-level", "warning", "findings", "--config", module.params["config"]]
    if team:
        command += ["--team", team]
    if window_end:
        command += ["--window-end", window_end]
    rc, out, err = module.run_command(command)
    if rc != 0:
        module.fail_json(msg=f"{' '.join(command)} failed ({rc}): {err.strip()}", rc=rc)
    try:
        findings = json.loads(out)["findings"]
    except (ValueError, KeyError, TypeError) as e:
        module.fail_json(msg=f"{' '.join(command)} printed no findings document: {e}")
    savings = [f["monthly_saving"] for f in findings if f.get("monthly_saving") is not None]
    module.exit_json(changed=False, findings=findings, count=len(findings), monthly_saving=round(sum(savings), 2))


if __name__ == "__main__":
    main()
