"""Hostile whitelists against real nginx: the hardening issue's reproducers stay fixed, and fuzzed documents are
either refused naming file and key, or accepted and then nginx agrees (`nginx -t`) and decides as `explain` says."""

import copy
import ipaddress
import re

import pytest
from ansible_collections.infra.obs.plugins.plugin_utils.whitelist import WhitelistError, compile_nginx, load
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_action import PLAY
from test_nginx_decides import Nginx, free_port

OUTSIDE = "203.0.113.9"  # in no group below


@pytest.fixture(scope="module")
def nginx(tmp_path_factory):
    server = Nginx(tmp_path_factory.mktemp("nginx-hostile"))
    yield server
    server.stop()


def serve(nginx: Nginx, whitelist) -> None:
    """Run the compiled http config, with the client address read from X-Test-IP (loopback has no IPv6 here)."""
    log = str(nginx.prefix / "decisions.log")
    conf = compile_nginx(whitelist, address_variable="$http_x_test_ip", access_log=log)["http.conf"]
    nginx.run(re.sub(r"(?m)^    listen \[::\]:\d+;\n", "", conf))


def backend(port: int, origin: int) -> dict:
    return {"protocol": "http", "listen": port, "upstreams": [f"127.0.0.1:{origin}"]}


def test_reproducer_1_a_zone_id_carrying_nginx_syntax_is_refused(nginx):
    injected = (
        "fe80::1%lo; } geo $infra_obs_wl_app_0 { default 1; } server { listen 127.0.0.1:18080; server_name ~. ; "
        "set $x x/128"
    )
    document = {
        "settings": {"trusted_proxies": [injected]},
        "groups": {"g": {"cidrs": ["192.0.2.0/24"]}},
        "backends": {"app": backend(nginx.port, nginx.origin)},
        "rules": [{"backend": "app", "groups": ["g"]}],
    }
    with pytest.raises(WhitelistError) as caught:
        load([("hostile.yml", document)])
    (problem,) = caught.value.problems
    assert (problem.file, problem.key) == ("hostile.yml", "settings.trusted_proxies[0]")
    # The same proxy written as an address: accepted, and a client outside the whitelist is still refused.
    document["settings"]["trusted_proxies"] = ["fe80::1/128"]
    serve(nginx, load([("hostile.yml", document)]))
    assert nginx.status(OUTSIDE) == 403
    assert nginx.status("192.0.2.7") == 200


def test_reproducer_2_backends_differing_by_dash_and_underscore_decide_apart(nginx):
    """`a-b` and `a_b` shared one geo variable: the last map won, so each let the other's clients in."""
    other = free_port()
    whitelist = load(
        [
            (
                "hostile.yml",
                {
                    "groups": {"ga": {"cidrs": ["192.0.2.0/25"]}, "gb": {"cidrs": ["192.0.2.128/25"]}},
                    "backends": {"a-b": backend(nginx.port, nginx.origin), "a_b": backend(other, nginx.origin)},
                    "rules": [{"backend": "a-b", "groups": ["ga"]}, {"backend": "a_b", "groups": ["gb"]}],
                },
            )
        ]
    )
    serve(nginx, whitelist)
    for client in ("192.0.2.1", "192.0.2.200", OUTSIDE):
        reached = {reason["backend"] for reason in whitelist.explain(client)}
        for name, port in (("a-b", nginx.port), ("a_b", other)):
            assert nginx.status(client, port=port) == (200 if name in reached else 403), (client, name)


def test_reproducers_3_and_4_are_refused_by_the_reader_through_ansible(playbook, tmp_path):
    """A duplicate backend and an alias bomb never reach the loader: the task fails naming the file and line."""
    cases = {
        "duplicate.yml": (
            "groups: {g: {cidrs: [192.0.2.0/24]}}\nbackends:\n  app: {listen: 18080, upstreams: ['127.0.0.1:1']}\n"
            "  app: {listen: 18081, upstreams: ['127.0.0.1:2']}\nrules: [{backend: app, groups: [g]}]\n",
            "duplicate key 'app'",
        ),
        "bomb.yml": (
            'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
            + "".join(f"{n}: &{n} [{', '.join(['*' + i] * 9)}]\n" for i, n in zip("abcdefgh", "bcdefghi", strict=True)),
            "aliases",
        ),
    }
    for name, (text, why) in cases.items():
        src, dest = tmp_path / name, tmp_path / f"out-{name}"
        src.write_text(text)
        run = playbook(PLAY.format(src=src, dest=dest))
        assert run.rc != 0
        message = run.failures()[-1]
        assert f"{src}: not valid YAML" in message and why in message and "line " in message, message
        assert len(message) < 2000
        assert not dest.exists()


# Grammar-based fuzzing: each field is a valid value or a valid value with one hostile character class added.
HOSTILE = ["\n", ";", "{", "}", '"', "'", "#", " ", "\t", "\x00", "é", "%lo", "$x", "\\", "//", "/..", "a" * 1100]
valid_names = st.from_regex(r"[a-z][a-z0-9_-]{0,6}", fullmatch=True)
valid_paths = st.from_regex(r"/[a-z0-9._~+=,:@-]{1,8}", fullmatch=True)


def maybe_hostile(valid, hostile=None, one_in=10):
    """One value in ten hostile by default, so that about half the documents are accepted and reach nginx."""
    if hostile is None:
        hostile = st.tuples(valid, st.sampled_from(HOSTILE)).map("".join)
    return st.integers(1, one_in).flatmap(lambda n: hostile if n == 1 else valid)


networks = st.one_of(
    st.builds(lambda v, p: ipaddress.IPv4Network((v, p), strict=False), st.integers(0, 2**32 - 1), st.integers(9, 32)),
    st.builds(
        lambda v, p: ipaddress.IPv6Network((v, p), strict=False), st.integers(0, 2**128 - 1), st.integers(33, 128)
    ).filter(lambda n: not n.subnet_of(ipaddress.IPv6Network("::ffff:0:0/96"))),
)


@st.composite
def documents(draw, port: int, origin: int):
    group = draw(maybe_hostile(valid_names))
    name = draw(maybe_hostile(valid_names))
    # Hostile text after the address too, where ipaddress takes an IPv6 zone id: `fe80::1%<anything>/64`.
    hostile_cidrs = st.tuples(networks, st.sampled_from(HOSTILE), st.booleans()).map(
        lambda t: f"{t[0]}{t[1]}" if t[2] else f"{t[0].network_address}%{t[1]}/{t[0].prefixlen}"
    )
    cidrs = draw(st.lists(maybe_hostile(networks.map(str), hostile_cidrs, one_in=4), min_size=1, max_size=3))
    paths = draw(st.lists(maybe_hostile(valid_paths), max_size=2))
    upstream = draw(maybe_hostile(st.just(f"127.0.0.1:{origin}")))
    rule = {"backend": name, "groups": [group]} | ({"paths": paths} if paths else {})
    return {
        "groups": {group: {"cidrs": cidrs}},
        "backends": {name: {"protocol": "http", "listen": port, "upstreams": [upstream]}},
        "rules": [rule, {"backend": name, "groups": [group]}] if paths else [rule],
    }


@settings(max_examples=60, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_whitelists_are_refused_or_nginx_agrees(nginx, data):
    document = data.draw(documents(nginx.port, nginx.origin))
    try:
        whitelist = load([("fuzz.yml", copy.deepcopy(document))])
    except WhitelistError as error:
        event("refused")
        assert error.problems
        assert all(p.file == "fuzz.yml" and p.key and p.why and len(str(p)) < 700 for p in error.problems)
        return
    event("accepted")
    serve(nginx, whitelist)  # nginx -t first: it must accept what we accepted
    (group,) = document["groups"]
    addresses = [ipaddress.ip_network(c).network_address for c in document["groups"][group]["cidrs"]]
    for address in [*map(str, addresses), OUTSIDE]:
        reached = {reason["path"] for reason in whitelist.explain(address)}
        for path in {"/", *document["rules"][0].get("paths", [])}:
            assert nginx.status(address, path) == (200 if path in reached else 403), (address, path, document)
