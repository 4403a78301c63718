# Copyright: infra.obs maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Argument specs of the modules that run as action plugins on the controller. The action plugin validates its task's
arguments with them, and the module file hands the same spec to AnsibleModule, so ansible-test's validate-modules
holds each module's documentation to it: one spec, checked against the docs."""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule

MM2_CONFIG = {
    "src": {"type": "path", "required": True},
    "dest": {"type": "path"},
    "mode": {"type": "raw", "default": "0600"},
    "owner": {"type": "str"},
    "group": {"type": "str"},
}

NGINX_WHITELIST = {
    "src": {"type": "path", "required": True},
    "dest": {"type": "path"},
    "address_variable": {"type": "str", "default": "$remote_addr"},
    "access_log": {"type": "str", "default": "/var/log/nginx/infra-obs-whitelist.log"},
    "explain": {"type": "str"},
    "mode": {"type": "raw", "default": "0644"},
}


def refuse_without_action(module_name: str, argument_spec: dict) -> None:
    """The module's own entry point: its action plugin always runs instead, so reaching this is a packaging error."""
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    module.fail_json(msg=f"{module_name} runs as an action plugin on the controller; its action plugin was not found")
