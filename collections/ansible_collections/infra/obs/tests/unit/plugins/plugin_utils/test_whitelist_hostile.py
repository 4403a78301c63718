"""Whitelists written by a hostile author: every field that reaches nginx refuses every class of hostile text with
an error naming the file, the key and the value (cut short), and what is accepted compiles only to lines the
compiler means to write."""

import copy
import re

import pytest
from ansible_collections.infra.obs.plugins.plugin_utils import whitelist as wl
from ansible_collections.infra.obs.plugins.plugin_utils.whitelist import (
    WhitelistError,
    access_diff,
    compile_nginx,
    load,
)
from hypothesis import example, given, settings
from hypothesis import strategies as st

BASE = {
    "settings": {"trusted_proxies": ["192.0.2.10/32"], "real_ip_header": "X-Real-IP"},
    "groups": {
        "office": {"cidrs": ["192.0.2.0/28"], "include": ["vpn"], "description": "the office"},
        "vpn": {"cidrs": ["198.51.100.0/24"]},
    },
    "backends": {
        "billing": {"protocol": "http", "listen": 8443, "upstreams": ["10.89.60.5:8080"]},
        "db": {"protocol": "stream", "listen": 15432, "upstreams": ["[fd00::5]:5432"]},
    },
    "rules": [
        {"backend": "billing", "groups": ["office"]},
        {"backend": "billing", "groups": ["vpn"], "paths": ["/admin"]},
        {"backend": "db", "groups": ["vpn"]},
    ],
}

# Appended to a valid value of each field: each class of text that would change what nginx reads, or that a
# permissive parser would read as something else.
HOSTILE = {
    "newline": "\n",
    "newline then directive": "\nallow all;",
    "carriage return": "\r",
    "tab": "\t",
    "double quote": '"',
    "single quote": "'",
    "open brace": "{",
    "close brace": "}",
    "semicolon": ";",
    "hash": "#",
    "dollar": "$x",
    "backslash": "\\",
    "space": " x",
    "NUL": "\x00",
    "non-ASCII": "é",
    "right-to-left mark": "\u200f",
    "zone id": "%lo",
    "look-alike digit": "\u0661",  # ARABIC-INDIC DIGIT ONE: str.isdigit() and int() take it
    "fullwidth digit": "\uff11",
    "very long": "a" * 5000,
}


def _set(data, path, value):
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


def _rename(data, kind, old, new):
    data[kind] = {new if name == old else name: spec for name, spec in data[kind].items()}


# field -> (how to put the hostile value in, the key path the error names)
FIELDS = {
    "group name": (lambda d, v: _rename(d, "groups", "vpn", v), "groups"),
    "backend name": (lambda d, v: _rename(d, "backends", "db", v), "backends"),
    "group cidr": (lambda d, v: _set(d, ["groups", "vpn", "cidrs", 0], v), "groups.vpn.cidrs[0]"),
    "group include": (lambda d, v: _set(d, ["groups", "office", "include", 0], v), "groups.office.include[0]"),
    "backend upstream": (
        lambda d, v: _set(d, ["backends", "billing", "upstreams", 0], v),
        "backends.billing.upstreams[0]",
    ),
    "rule backend": (lambda d, v: _set(d, ["rules", 0, "backend"], v), "rules[0].backend"),
    "rule group": (lambda d, v: _set(d, ["rules", 0, "groups", 0], v), "rules[0].groups[0]"),
    "rule path": (lambda d, v: _set(d, ["rules", 1, "paths", 0], v), "rules[1].paths[0]"),
    "real_ip_header": (lambda d, v: _set(d, ["settings", "real_ip_header"], v), "settings.real_ip_header"),
    "trusted proxy": (lambda d, v: _set(d, ["settings", "trusted_proxies", 0], v), "settings.trusted_proxies[0]"),
}
VALID = {
    "group name": "vpn",
    "backend name": "db",
    "group cidr": "198.51.100.0/24",
    "group include": "vpn",
    "backend upstream": "10.89.60.5:8080",
    "rule backend": "billing",
    "rule group": "office",
    "rule path": "/admin",
    "real_ip_header": "X-Real-IP",
    "trusted proxy": "192.0.2.10/32",
}


def _hostile_document(field, payload):
    data = copy.deepcopy(BASE)
    value = VALID[field] + payload
    if field == "group name":  # the rules and includes name it too, so only the name itself is wrong
        data["rules"][1]["groups"] = data["rules"][2]["groups"] = data["groups"]["office"]["include"] = [value]
    if field == "backend name":
        data["rules"][2]["backend"] = value
    FIELDS[field][0](data, value)
    return data, value


@pytest.mark.parametrize("payload", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize("field", FIELDS)
def test_every_field_refuses_every_hostile_class(field, payload):
    data, value = _hostile_document(field, payload)
    with pytest.raises(WhitelistError) as caught:
        load([("teams/hostile.yml", data)])
    key = FIELDS[field][1]
    named = [p for p in caught.value.problems if p.file == "teams/hostile.yml" and p.key == key]
    assert named, caught.value.problems
    assert any(p.value == value for p in named)
    # The message shows the value, cut short: a hostile value never makes the error itself a problem.
    assert all(len(str(p)) < 700 for p in caught.value.problems)


def test_the_valid_base_is_accepted():
    """The base of the table above compiles: every refusal there is the payload's doing."""
    assert set(compile_nginx(load([("teams/hostile.yml", copy.deepcopy(BASE))]))) == {"http.conf", "stream.conf"}


def test_a_long_description_is_refused_and_a_short_one_never_reaches_nginx():
    data = copy.deepcopy(BASE)
    data["groups"]["vpn"]["description"] = "x" * 1001
    with pytest.raises(WhitelistError, match=r"groups\.vpn\.description: 'xxx.*\(1003 characters\)"):
        load([("a.yml", data)])
    data["groups"]["vpn"]["description"] = "} server { listen 1; }"
    assert "server { listen 1" not in "".join(compile_nginx(load([("a.yml", data)])).values())


@pytest.mark.parametrize(
    ("cidr", "why"),
    [
        # Reproducer 1 of the hardening issue: a zone id carried nginx syntax into set_real_ip_from.
        (
            "fe80::1%lo; } geo $infra_obs_wl_app_0 { default 1; } server { listen 127.0.0.1:18080; server_name ~. "
            "; set $x x/128",
            "not an IPv4 or IPv6",
        ),
        ("fe80::1%lo", "not an IPv4 or IPv6"),
        ("fe80::%eth0; allow all/64", "not an IPv4 or IPv6"),
        ("localhost/32", "not an IPv4 or IPv6"),
        ("198.51.100.0/24\n", "not an IPv4 or IPv6"),
    ],
)
def test_addresses_with_zone_ids_names_or_trailing_text_are_refused(cidr, why):
    data = copy.deepcopy(BASE)
    data["settings"]["trusted_proxies"] = [cidr]
    data["groups"]["vpn"]["cidrs"] = [cidr]
    with pytest.raises(WhitelistError) as caught:
        load([("a.yml", data)])
    keys = {p.key for p in caught.value.problems if why in p.why}
    assert keys == {"settings.trusted_proxies[0]", "groups.vpn.cidrs[0]"}, caught.value.problems


def test_a_refused_cidr_is_the_only_error_of_its_group():
    data = copy.deepcopy(BASE)
    data["groups"]["vpn"]["cidrs"] = ["fe80::1%lo"]
    with pytest.raises(WhitelistError) as caught:
        load([("a.yml", data)])
    assert [p.key for p in caught.value.problems] == ["groups.vpn.cidrs[0]"]


@pytest.mark.parametrize(
    ("upstream", "written"),
    [
        ("10.89.60.5:8080", "10.89.60.5:8080"),
        ("[FD00::5]:5432", "[fd00::5]:5432"),
        ("Api.Example.internal:443", "api.example.internal:443"),
        ("api.example.internal.:443", "api.example.internal:443"),
    ],
)
def test_upstreams_are_written_from_their_parsed_host_and_port(upstream, written):
    data = copy.deepcopy(BASE)
    data["backends"]["billing"]["upstreams"] = [upstream]
    assert f"    server {written};" in compile_nginx(load([("a.yml", data)]))["http.conf"].splitlines()


@pytest.mark.parametrize(
    "upstream",
    ["10.0.0.1:080", "10.0.0.1:0", "[fe80::1%lo]:80", "01.2.3.4:80", "1.2.3:80", "-x.example:80", "a..b:80", "[x]:80"],
)
def test_upstreams_outside_the_grammar_are_refused(upstream):
    data = copy.deepcopy(BASE)
    data["backends"]["billing"]["upstreams"] = [upstream]
    with pytest.raises(WhitelistError, match=r"backends\.billing\.upstreams\[0\]"):
        load([("a.yml", data)])


@pytest.mark.parametrize("path", ["/a/../admin", "/a//b", "/./a", "/a%2Fb", "/a/..", "/a b"])
def test_paths_nginx_would_never_match_as_written_are_refused(path):
    data = copy.deepcopy(BASE)
    data["rules"][1]["paths"] = [path]
    with pytest.raises(WhitelistError, match=r"rules\[1\]\.paths\[0\]"):
        load([("a.yml", data)])


@pytest.mark.parametrize(
    ("mutation", "key", "why"),
    [
        (lambda d: _set(d, ["rules", 0, "backend"], ""), "rules[0].backend", "must name a backend"),
        (lambda d: _rename(d, "backends", "db", "db\n"), "backends", "names are lowercase"),
        (lambda d: _set(d, ["settings", "allow_empty"], "yes"), "settings.allow_empty", "true or false"),
        (lambda d: d["groups"].update({"x\ny": {"cidrs": ["192.0.2.64/26"]}}), "groups", "names are lowercase"),
        (lambda d: d["groups"]["vpn"].update({"colour\n": 1}), "groups.vpn", "unknown key"),
    ],
)
def test_edge_cases_found_by_the_attack_are_refused(mutation, key, why):
    data = copy.deepcopy(BASE)
    mutation(data)
    with pytest.raises(WhitelistError) as caught:
        load([("a.yml", data)])
    assert any(p.key == key and why in p.why for p in caught.value.problems), caught.value.problems


def test_a_stream_backend_cannot_take_the_deny_upstreams_name():
    """`whitelist_deny` was the deny upstream's name without our prefix; the deny upstream now has a '.' that no
    backend name can have."""
    data = copy.deepcopy(BASE)
    _rename(data, "backends", "db", "whitelist_deny")
    data["rules"][2]["backend"] = "whitelist_deny"
    stream = compile_nginx(load([("a.yml", data)]))["stream.conf"]
    upstreams = re.findall(r"^upstream (\S+) \{", stream, re.MULTILINE)
    assert len(upstreams) == len(set(upstreams)) == 2, upstreams


def test_an_empty_whitelist_is_refused_unless_it_says_so():
    with pytest.raises(WhitelistError, match=r"a\.yml, b\.yml: backends: \{\}: no backend in any file"):
        load([("a.yml", {}), ("b.yml", {"groups": {"vpn": {"cidrs": ["198.51.100.0/24"]}}})])
    empty = load([("a.yml", {"settings": {"allow_empty": True}})])
    assert empty.access() == {}
    assert all("server {" not in text for text in compile_nginx(empty).values())


def test_removing_a_backend_shows_as_lost_access():
    before = load([("a.yml", copy.deepcopy(BASE))]).access()
    data = copy.deepcopy(BASE)
    del data["backends"]["db"]
    data["rules"].pop(2)
    changes = access_diff(before, load([("a.yml", data)]).access())
    assert changes == [{"backend": "db", "path": "/", "group": "vpn", "gains": [], "loses": ["198.51.100.0/24"]}]


# A small alphabet, so that names differing only by '-', '_' and their order come up often.
names = st.from_regex(r"[ab][ab_-]{0,5}", fullmatch=True)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.lists(names, min_size=2, max_size=4, unique=True), st.booleans())
@example(["a-b", "a_b"], False)
@example(["s-x", "s_x"], True)
def test_every_backend_gets_variables_of_its_own(backend_names, stream):
    """Names that differ only by '-' and '_' (reproducer 2) shared one geo variable: the last map won in nginx."""
    data = {
        "groups": {f"g{i}": {"cidrs": [f"192.0.2.{4 * i}/30"]} for i in range(len(backend_names))},
        "backends": {
            name: {"protocol": "stream" if stream else "http", "listen": 20000 + i, "upstreams": ["127.0.0.1:9"]}
            for i, name in enumerate(backend_names)
        },
        "rules": [{"backend": name, "groups": [f"g{i}"]} for i, name in enumerate(backend_names)],
    }
    conf = "".join(compile_nginx(load([("a.yml", data)])).values())
    geo_variables = re.findall(r"^geo \S+ (\S+) \{", conf, re.MULTILINE)
    assert len(geo_variables) == len(set(geo_variables)) == len(backend_names)
    # Each backend's server reads its own map: the geo variable set in its server block was made for its name.
    for name in backend_names:
        assert wl._variable(name, 0) in conf


def test_the_compiler_refuses_to_write_a_line_it_does_not_mean():
    """The last guard: a value that got past validation with nginx syntax in it never reaches a file."""
    whitelist = load([("a.yml", copy.deepcopy(BASE))])
    whitelist.backends["billing"].upstreams = ["10.0.0.1:80; } server { listen 1"]
    with pytest.raises(AssertionError, match=r"line .* is not one it writes"):
        compile_nginx(whitelist)


@pytest.mark.parametrize(
    ("argument", "value"), [("address_variable", "$remote_addr;"), ("access_log", "/var/log/x.log; allow all")]
)
def test_operator_arguments_are_checked_too(argument, value):
    with pytest.raises(ValueError, match=argument):
        compile_nginx(load([("a.yml", copy.deepcopy(BASE))]), **{argument: value})
