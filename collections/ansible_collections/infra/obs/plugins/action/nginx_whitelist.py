# Copyright: infra.obs maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for infra.obs.nginx_whitelist: the users' files are read, validated and compiled on the
controller (so errors can name them); the compiled files are copied to the host with ansible's copy action."""

from __future__ import annotations

import base64
import json
import os

from ansible.plugins.action import ActionBase
from ansible_collections.infra.obs.plugins.module_utils._action_specs import NGINX_WHITELIST
from ansible_collections.infra.obs.plugins.plugin_utils.actions import copy_content, source_documents
from ansible_collections.infra.obs.plugins.plugin_utils.whitelist import (
    WhitelistError,
    access_diff,
    compile_nginx,
    load,
)

_ACCESS_FILE = "access.json"


def _access_lines(access: dict) -> str:
    """One line per (backend, path, group, CIDR): a unified diff of two of these reads as who gains or loses what."""
    lines = [
        f"{backend} {path} {group} {cidr}"
        for backend, paths in sorted(access.items())
        for path, groups in sorted(paths.items())
        for group, cidrs in sorted(groups.items())
        for cidr in cidrs
    ]
    return "".join(line + "\n" for line in lines)


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars or {})
        del tmp
        _validation, args = self.validate_argument_spec(argument_spec=NGINX_WHITELIST)
        src, documents = source_documents(self, args["src"])
        try:
            whitelist = load(documents)
        except WhitelistError as error:
            return {
                "failed": True,
                "msg": f"whitelist {src} is invalid:\n{error}",
                "problems": error.results(),
            }

        access = whitelist.access()
        result.update(
            changed=False,
            access=access,
            warnings=[str(w) for w in whitelist.warnings],
        )
        if args["explain"]:
            try:
                result["explain"] = whitelist.explain(args["explain"])
            except ValueError as error:
                return {"failed": True, "msg": f"explain: {args['explain']!r} is not an IP address ({error})"}

        dest = args["dest"]
        if not dest:
            return result

        before = self._deployed_access(dest, task_vars)
        result["access_changes"] = access_diff(before, access)
        if self._task.diff and result["access_changes"]:
            result["diff"] = [
                {
                    "before_header": f"{dest} (effective access)",
                    "before": _access_lines(before),
                    "after_header": f"{src} (effective access)",
                    "after": _access_lines(access),
                }
            ]

        try:
            files = compile_nginx(whitelist, args["address_variable"], args["access_log"])
        except ValueError as error:
            return {"failed": True, "msg": str(error)}
        files[_ACCESS_FILE] = json.dumps(access, indent=2, sort_keys=True) + "\n"
        result["files"] = sorted(files)
        for name, content in sorted(files.items()):
            copied = copy_content(self, content, os.path.join(dest, name), args["mode"], task_vars)
            if copied.get("failed"):
                return copied | {"msg": f"writing {os.path.join(dest, name)}: {copied.get('msg')}"}
            result["changed"] = result["changed"] or copied.get("changed", False)
        return result

    def _deployed_access(self, dest: str, task_vars: dict) -> dict:
        slurped = self._execute_module(
            module_name="ansible.legacy.slurp",
            module_args={"src": os.path.join(dest, _ACCESS_FILE)},
            task_vars=task_vars,
        )
        if slurped.get("failed"):
            return {}
        return json.loads(base64.b64decode(slurped["content"]))
