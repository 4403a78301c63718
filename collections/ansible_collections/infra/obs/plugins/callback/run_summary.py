# Copyright: (c) 2026, infra.obs contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: run_summary
type: notification
short_description: Write a playbook run's per-host recap and its changes to a JSON file
description:
  - At the end of a run, writes one JSON document to O(path) with, for each host, the recap counts (ok, changed,
    failures, unreachable, skipped, rescued, ignored) and the tasks that changed something (or would, under
    C(--check)), with the files their diffs name.
  - The delivery pipeline enables it beside the usual output, so that a deployment's audit record holds the
    recap per host and the plan's summary without parsing the screen output.
  - The document is written to a file beside O(path) and renamed over it, so a reader never sees half of it.
requirements:
  - Enabled in C(callbacks_enabled).
options:
  path:
    description: Where to write the summary. Nothing is written when it is not set.
    type: path
    env:
      - name: INFRA_OBS_RUN_SUMMARY
    ini:
      - section: callback_run_summary
        key: path
"""

import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
from collections import defaultdict  # noqa: E402

from ansible.plugins.callback import CallbackBase  # noqa: E402


def _diff_files(result):
    """The file names in a result's diff(s): a task's own, or its loop items'."""
    names = set()
    results = [result] + [item for item in result.get("results", []) if isinstance(item, dict)]
    for each in results:
        diffs = each.get("diff") or []
        for diff in diffs if isinstance(diffs, list) else [diffs]:
            if isinstance(diff, dict):
                names.update(str(diff[k]) for k in ("before_header", "after_header") if diff.get(k))
    return sorted(names)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "infra.obs.run_summary"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._changes = defaultdict(list)

    def v2_runner_on_ok(self, result):
        if result._result.get("changed"):
            self._changes[result._host.get_name()].append(
                {"task": result._task.get_name(), "files": _diff_files(result._result)}
            )

    def v2_playbook_on_stats(self, stats):
        path = self.get_option("path")
        if not path:
            return
        hosts = sorted(set(stats.processed) | set(self._changes))
        document = {
            "hosts": {host: stats.summarize(host) for host in hosts},
            "changes": {host: self._changes[host] for host in hosts if self._changes[host]},
        }
        directory = os.path.dirname(os.path.abspath(path))
        with tempfile.NamedTemporaryFile("w", dir=directory, prefix=".run-summary-", delete=False) as handle:
            json.dump(document, handle, indent=2, sort_keys=True)
        os.replace(handle.name, path)
