# Copyright: infra.obs maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers shared by the collection's action plugins."""

from __future__ import annotations

import os
import tempfile

from ansible.plugins.action import ActionBase
from ansible_collections.infra.obs.plugins.plugin_utils.userdata import read_documents


def copy_content(
    action: ActionBase,
    content: str,
    dest: str,
    mode: str,
    task_vars: dict,
    *,
    owner: str | None = None,
    group: str | None = None,
) -> dict:
    """Write content to dest on the host through ansible's copy action, so check mode, diff and changed behave as
    the copy module's (owner and group too, when given). The local file sits in a private temporary directory
    (0700): content may hold passwords."""
    with tempfile.TemporaryDirectory() as local:
        path = os.path.join(local, os.path.basename(dest))
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(content)
        task = action._task.copy()
        task.args = {"src": path, "dest": dest, "mode": mode}
        task.args.update({key: value for key, value in (("owner", owner), ("group", group)) if value is not None})
        copy = action._shared_loader_obj.action_loader.get(
            "ansible.legacy.copy",
            task=task,
            connection=action._connection,
            play_context=action._play_context,
            loader=action._loader,
            templar=action._templar,
            shared_loader_obj=action._shared_loader_obj,
        )
        return copy.run(task_vars=task_vars)


def source_documents(action: ActionBase, src: str) -> tuple[str, list[tuple[str, object]]]:
    """The task's src (a file or directory on the controller, also looked up like a role's files) and its parsed
    YAML documents."""
    src = action._find_needle("files", src) if not os.path.isabs(src) and not os.path.exists(src) else src
    return src, read_documents(src)
