# Copyright: infra.obs maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja tests for values the roles write into systemd units and environment files, where a newline starts a new
directive (ExecStartPre=+ runs as root), a space a new argument, and systemd expands '%' and '$'."""

from __future__ import annotations

import re

# Whole-value grammars (fullmatch: `$` would let a final newline through).
UNIT_PATH = re.compile(r"/[A-Za-z0-9._/-]{0,254}")
UNIT_WORD = re.compile(r"[A-Za-z0-9._:@/+=,-]{1,255}")


def unit_path(value: object) -> bool:
    """An absolute path of letters, digits and . _ - /, without '..' segments."""
    return isinstance(value, str) and bool(UNIT_PATH.fullmatch(value)) and ".." not in value.split("/")


def unit_word(value: object) -> bool:
    """One command-line word (or a list of them): no whitespace, quotes, backslash, '%', '$' or control
    characters."""
    if isinstance(value, list):
        return all(unit_word(word) for word in value)
    return isinstance(value, str) and bool(UNIT_WORD.fullmatch(value))


class TestModule:
    def tests(self):
        return {"unit_path": unit_path, "unit_word": unit_word}
