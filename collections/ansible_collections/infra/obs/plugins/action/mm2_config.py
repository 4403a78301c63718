# Copyright: infra.obs maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for infra.obs.mm2_config: the team's MM2 files are read and validated on the controller (so errors
can name them), the passwords they name are looked up in the host's variables, and mm2.properties is copied to the
host with ansible's copy action. No password reaches the result, its diff or any message."""

from __future__ import annotations

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase
from ansible_collections.infra.obs.plugins.module_utils._action_specs import MM2_CONFIG
from ansible_collections.infra.obs.plugins.plugin_utils.actions import copy_content, source_documents
from ansible_collections.infra.obs.plugins.plugin_utils.mm2 import Flow, load, mask_secrets, render_properties
from ansible_collections.infra.obs.plugins.plugin_utils.userdata import ProblemsError


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        _validation, args = self.validate_argument_spec(argument_spec=MM2_CONFIG)
        src, documents = source_documents(self, args["src"])
        dest = args["dest"]
        try:
            flow = load(documents)
            properties = render_properties(flow, self._passwords(flow, task_vars)) if dest else None
        except ProblemsError as error:
            return {
                "failed": True,
                "msg": f"MM2 flow {src}:\n{error}",
                "problems": error.results(),
            }
        result.update(changed=False, flow=flow.summary())
        if not dest:
            return result

        copied = copy_content(
            self,
            properties,
            dest,
            args["mode"],
            task_vars,
            owner=args["owner"],
            group=args["group"],
        )
        if copied.get("failed"):
            return {"failed": True, "flow": result["flow"], "msg": f"writing {dest}: {copied.get('msg')}"}
        result.update(changed=copied.get("changed", False), dest=dest)
        # copy returns a list of diffs when it wrote the file, and its file module's single dict (of attributes,
        # whose before/after are dicts) when the content was already there.
        diffs = copied.get("diff") or []
        if isinstance(diffs, dict):
            diffs = [diffs]
        if diffs:
            result["diff"] = [
                diff
                | {key: mask_secrets(diff[key]) for key in ("before", "after") if isinstance(diff.get(key), str)}
                | ({"after_header": f"{src} (rendered)"} if "after_header" in diff else {})
                for diff in diffs
            ]
        return result

    def _passwords(self, flow: Flow, task_vars: dict) -> dict:
        """The host's value of each password variable the flow names; render_properties names the missing ones."""
        templar = self._templar.copy_with_new_env(available_variables=task_vars)
        found = {}
        for _file, _key, name in flow.secret_vars():
            try:
                found[name] = templar.resolve_variable_expression(name)
            except AnsibleError:
                continue  # undefined, or failed to template: its error text may hold the value, so it is dropped
        return found
