"""Users' YAML files are read safely: a duplicate key is an error naming file, line and key, aliases are refused
before anything walks the value, and errors show values cut short."""

import pytest
import yaml
from ansible.errors import AnsibleActionFail
from ansible_collections.infra.obs.plugins.plugin_utils.userdata import Problem, UserDataLoader, read_documents

# Reproducer 4 of the whitelist hardening issue: nine lines, 9**9 = 387,420,489 strings once expanded.
ALIAS_BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{name}: &{name} [{', '.join(['*' + inner] * 9)}]\n" for inner, name in zip("abcdefgh", "bcdefghi", strict=True)
)


def read(tmp_path, text: str, name: str = "team.yml"):
    path = tmp_path / name
    path.write_text(text)
    return read_documents(str(path))


def test_libyaml_parses_when_it_is_there():
    """5 MB of CIDRs take about a second with libyaml's parser and seven with PyYAML's."""
    assert yaml.__with_libyaml__
    assert issubclass(UserDataLoader, yaml.CSafeLoader)


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        # Reproducer 3: a second backend of the same name replaced the first.
        ("backends:\n  app: {listen: 1}\n  app: {listen: 2}\n", 3, "'app'"),
        ("groups:\n  g: {cidrs: [192.0.2.0/24]}\n  h: {}\n  g: {cidrs: [0.0.0.0/0]}\n", 4, "'g'"),
        ("settings: {}\nsettings: {allow_empty: true}\n", 2, "'settings'"),
        ("a: {1: x, 1: y}\n", 1, "1"),
    ],
)
def test_a_duplicate_key_is_an_error_naming_file_line_and_key(tmp_path, text, line, key):
    with pytest.raises(AnsibleActionFail) as caught:
        read(tmp_path, text)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'team.yml'}: not valid YAML")
    assert f"duplicate key {key}" in message
    assert f'"{tmp_path / "team.yml"}", line {line},' in message


def test_an_alias_bomb_is_refused_before_anything_expands_it(tmp_path):
    with pytest.raises(AnsibleActionFail, match=r"team\.yml: not valid YAML: .*aliases .*not allowed") as caught:
        read(tmp_path, ALIAS_BOMB)
    assert len(str(caught.value)) < 500


@pytest.mark.parametrize(
    "text",
    [
        "a: &x [1]\nb: *x\n",
        "a: &x [*x]\n",
        "base: &b {listen: 1}\napp:\n  <<: *b\n",
        "groups:\n  g:\n    description: &d [x, x]\n    cidrs: *d\n",
    ],
)
def test_every_alias_is_refused(tmp_path, text):
    with pytest.raises(AnsibleActionFail, match="aliases"):
        read(tmp_path, text)


def test_an_anchor_without_alias_and_an_empty_file_are_fine(tmp_path):
    assert read(tmp_path, "a: &x [1]\nb: 2\n") == [(str(tmp_path / "team.yml"), {"a": [1], "b": 2})]
    assert read(tmp_path, "# nothing yet\n", "empty.yml") == [(str(tmp_path / "empty.yml"), {})]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"a: \xff\xfe\n", "not UTF-8"),
        (b"a: [1\n", "not valid YAML"),
        (b"a: 1\n---\nb: 2\n", "not valid YAML: expected a single document"),
    ],
)
def test_unreadable_files_name_themselves(tmp_path, content, why):
    path = tmp_path / "bad.yml"
    path.write_bytes(content)
    with pytest.raises(AnsibleActionFail, match=f"bad.yml: {why}"):
        read_documents(str(path))


def test_problems_show_values_and_keys_cut_short():
    problem = Problem("a.yml", "groups." + "k" * 5000, "v" * 1_000_000, "why")
    text = str(problem)
    assert len(text) < 500
    assert text.endswith("... (1000002 characters): why")
