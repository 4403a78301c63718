"""Alert rules shipped by the roles pass `promtool check rules` and their `promtool test rules` cases."""

import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
RULE_FILES = sorted(REPO.glob("roles/*/files/rules/*.rules.yml"))
RULE_TESTS = sorted((REPO / "tests" / "rules").glob("*_test.yml"))


def test_every_rule_file_has_a_test():
    tested = {path.name.removesuffix("_test.yml") for path in RULE_TESTS}
    assert {path.name.removesuffix(".rules.yml") for path in RULE_FILES} <= tested


@pytest.mark.parametrize("rules", RULE_FILES, ids=lambda p: p.name)
def test_rules_check(rules):
    result = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("case", RULE_TESTS, ids=lambda p: p.name)
def test_rule_cases(case):
    result = subprocess.run(["promtool", "test", "rules", str(case)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
