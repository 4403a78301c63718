# Copyright: infra.obs maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The users' own data files (whitelists, MirrorMaker 2 flows), read on the controller: every problem names the
file, the key path, the value and why, and nothing is produced while there is one."""

from __future__ import annotations

import os
from dataclasses import dataclass

import yaml
from ansible.errors import AnsibleActionFail


@dataclass(frozen=True)
class Problem:
    file: str
    key: str
    value: object
    why: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.value!r}: {self.why}"


class ProblemsError(ValueError):
    """Raised with every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def read_documents(src: str) -> list[tuple[str, object]]:
    """Parsed YAML of src (a file, or every *.yml/*.yaml in a directory, in name order) with each file's path."""
    if os.path.isdir(src):
        files = sorted(os.path.join(src, n) for n in os.listdir(src) if n.endswith((".yml", ".yaml")))
        if not files:
            raise AnsibleActionFail(f"{src}: no .yml or .yaml files in this directory")
    elif os.path.isfile(src):
        files = [src]
    else:
        raise AnsibleActionFail(f"{src}: no such file or directory")
    documents = []
    for path in files:
        try:
            with open(path, encoding="utf-8") as handle:
                documents.append((path, yaml.safe_load(handle) or {}))
        except yaml.YAMLError as error:
            raise AnsibleActionFail(f"{path}: not valid YAML: {error}") from error
    return documents
