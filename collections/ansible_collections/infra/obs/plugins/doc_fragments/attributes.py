# Copyright: infra.obs maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Attributes shared by several of the collection's modules."""

from __future__ import annotations


class ModuleDocFragment:
    # Modules that read users' files on the controller (so errors can name them) and write to the host.
    ACTION_CONTROLLER = r"""
options: {}
attributes:
  action:
    description: Runs on the controller as an action plugin, where it reads the users' files, so its errors name them.
    support: full
"""

    # Modules that talk to Kafka clusters themselves.
    KAFKA_CLIENT = r"""
options: {}
attributes:
  platform:
    description: Needs network access to the clusters and kafka-python where it runs.
    support: full
    platforms: posix
"""

    # Modules that only read: the same in check mode, nothing to diff.
    READ_ONLY = r"""
options: {}
attributes:
  check_mode:
    description: Read-only; runs the same in check mode.
    support: full
  diff_mode:
    description: Nothing to show.
    support: none
"""
