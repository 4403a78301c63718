#!/usr/bin/python
# Copyright: infra.obs maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# The work is done by the action plugin of the same name, on the controller. This file carries the documentation and
# hands the argument spec the action plugin validates with to AnsibleModule, so validate-modules compares the two.

from __future__ import annotations

DOCUMENTATION = r"""
module: nginx_whitelist
short_description: Validate and compile nginx IP whitelists kept as data
description:
  - Reads the whitelist YAML (one file, or every C(.yml)/C(.yaml) file of a directory) on the controller, validates it
    and compiles it into nginx C(geo) maps with default deny, for the http and stream contexts.
  - Every error names the file, the key path, the value (cut to 200 characters) and why; nothing is written when
    there is any error. Files are read with duplicate keys and aliases refused. Every address is written from its
    parsed value and every name, path and header must match its grammar whole, so no text of the file reaches
    nginx as written.
  - A set of files without any backend is refused unless one sets C(settings.allow_empty) to true, because
    deployed it removes every backend from the proxy.
  - Ranges broader than C(settings.broad_prefix_v4) (default /8) or C(settings.broad_prefix_v6) (default /32), and
    always C(0.0.0.0/0) and C(::/0), are refused unless the rule that uses them sets C(allow_broad) to true.
    Redundant and duplicate entries, within a group and across the groups of one rule, are returned as RV(warnings).
  - Trusted-proxy real-IP handling is opt-in. With C(settings.trusted_proxies) (a list of narrow CIDRs; ranges as
    broad as the broad-prefix settings are refused), requests to http backends from those addresses are judged by
    the client address in C(settings.real_ip_header) (default C(X-Forwarded-For); the rightmost address not itself
    a trusted proxy), through nginx's realip module. B(Spoofing caveat:) any host inside a trusted range can claim
    to be any client, so list only the proxies themselves. What a client writes into the header itself is ignored
    as long as each trusted proxy appends the address it saw (nginx's C($proxy_add_x_forwarded_for) does). Stream
    backends always use the connection's own address.
  - With O(dest), writes C(http.conf), C(stream.conf) and C(access.json) (the effective access) to that directory on
    the host. The diff is the change in effective access, one line per backend, path, group and CIDR.
version_added: 0.1.0
extends_documentation_fragment:
  - infra.obs.attributes.action_controller
author: infra.obs maintainers (@infra-obs)
options:
  src:
    description: Whitelist file or directory on the controller.
    type: path
    required: true
  dest:
    description: Directory on the host for the compiled files. Without it the module only validates (and explains).
    type: path
  address_variable:
    description: nginx variable the geo maps read the client address from.
    type: str
    default: $remote_addr
  access_log:
    description: File every decision is logged to (backend, 1 allowed or 0 denied, status), for denial metrics.
    type: str
    default: /var/log/nginx/infra-obs-whitelist.log
  explain:
    description: An IP address; the result's RV(explain) lists which backends and paths it reaches, through which group,
      network and rule.
    type: str
  mode:
    description: Mode of the files written to O(dest).
    type: raw
    default: "0644"
attributes:
  check_mode:
    description: Validates, compiles and reports what would change without writing.
    support: full
  diff_mode:
    description: Shows the change in effective access, one line per backend, path, group and CIDR.
    support: full
"""

EXAMPLES = r"""
- name: Compile the whitelists into the proxy's staging directory
  infra.obs.nginx_whitelist:
    src: whitelists/
    dest: /etc/nginx/infra-obs/staging

- name: Which backends does this address reach?
  infra.obs.nginx_whitelist:
    src: whitelists/
    explain: 192.0.2.10
  register: why
"""

RETURN = r"""
access:
  description: Effective access, backend -> path -> group -> CIDRs.
  returned: success
  type: dict
access_changes:
  description: Each backend, path and group that gains or loses CIDRs compared to what O(dest) holds.
  returned: when O(dest) is set
  type: list
  elements: dict
warnings:
  description: Redundant or duplicate entries, each naming file, key and the entry that covers it.
  returned: success
  type: list
  elements: str
explain:
  description: For O(explain), each backend, path, group, network and rule that lets the address through.
  returned: when O(explain) is set
  type: list
  elements: dict
files:
  description: Names of the files written to O(dest).
  returned: when O(dest) is set
  type: list
  elements: str
problems:
  description: On failure, every problem found (file, key, value, why).
  returned: failure
  type: list
  elements: dict
"""

from ansible_collections.infra.obs.plugins.module_utils._action_specs import NGINX_WHITELIST, refuse_without_action  # noqa: E402


def main():
    refuse_without_action("infra.obs.nginx_whitelist", NGINX_WHITELIST)


if __name__ == "__main__":
    main()
