"""pytest plugin (pyproject.toml loads it with -p): where the suite's time goes, for tests/ and the collection's unit
tests alike. A plugin, not a conftest: a conftest's hooks see only the tests below it, and a second conftest module
would shadow tests/conftest.py for `from conftest import ...`."""

import collections
import pathlib

# Where the suite's time goes: the seconds each test directory took (set-up, test and tear-down, summed over workers),
# printed after the results so `make test` logs keep a per-part record.
_DIRECTORY_SECONDS: collections.Counter = collections.Counter()


def pytest_runtest_logreport(report):
    _DIRECTORY_SECONDS[str(pathlib.Path(report.location[0]).parent)] += report.duration


def pytest_terminal_summary(terminalreporter):
    terminalreporter.section("seconds per test directory")
    for directory, seconds in sorted(_DIRECTORY_SECONDS.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(f"{seconds:8.1f}  {directory}")
