# Copyright: infra.obs maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The users' own data files (whitelists, MirrorMaker 2 flows), read on the controller: every problem names the
file, the key path, the value and why, and nothing is produced while there is one."""

from __future__ import annotations

import gc
import ipaddress
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass

import yaml
from ansible.errors import AnsibleActionFail

# host:port, IPv6 as [address]:port; the host is parsed further (an address, or a DNS name of RFC 1123 labels).
HOST_PORT = re.compile(r"\[([0-9A-Fa-f:.]{2,45})\]:([0-9]{1,5})|([A-Za-z0-9.-]{1,253}):([0-9]{1,5})")
DNS_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# What an error shows of a value or key: enough to find it, never a whole hostile document.
SHOWN_CHARACTERS = 200


def shown(value: object) -> str:
    """repr(value), cut to SHOWN_CHARACTERS. Aliases are refused, so a value is never larger than its file."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARACTERS else f"{text[:SHOWN_CHARACTERS]}... ({len(text)} characters)"


def host_port(text: str) -> str | None:
    """A server address as configs take it (nginx's `server`, Kafka's bootstrap.servers), printed from the parsed
    host and port; None when refused. No IPv6 zone id: ipaddress keeps `%<any text>` in what it prints."""
    match = HOST_PORT.fullmatch(text)
    if not match:
        return None
    bracketed, v6_port, name, name_port = match.groups()
    port = v6_port or name_port
    host = _host(bracketed, name)
    if host is None or port != str(int(port)) or not 1 <= int(port) <= 65535:
        return None
    return f"{host}:{int(port)}"


def _host(bracketed: str | None, name: str | None) -> str | None:
    """[IPv6] or IPv4 as ipaddress prints it, or a DNS name of RFC 1123 labels in lower case; None when refused."""
    try:
        return f"[{ipaddress.IPv6Address(bracketed)}]" if bracketed is not None else str(ipaddress.IPv4Address(name))
    except ValueError:
        if bracketed is not None:
            return None
    labels = name.rstrip(".").split(".")
    # A name of digits and dots only would be taken for a malformed address.
    if all(DNS_LABEL.fullmatch(label) for label in labels) and not name.replace(".", "").isdigit():
        return ".".join(labels).lower()
    return None


@dataclass(frozen=True)
class Problem:
    file: str
    key: str
    value: object
    why: str

    def __str__(self) -> str:
        key = self.key if len(self.key) <= SHOWN_CHARACTERS else f"{self.key[:SHOWN_CHARACTERS]}..."
        return f"{self.file}: {key}: {shown(self.value)}: {self.why}"


class ProblemsError(ValueError):
    """Raised with every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    def results(self) -> list[dict]:
        """The problems as a task result lists them: each value shown cut short, never whole."""
        return [vars(p) | {"value": shown(p.value)} for p in self.problems]


class UserDataLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML for files a hostile author may write: libyaml's parser where available (5 MB of CIDRs in about a
    second), a duplicate key is an error (PyYAML keeps the last silently), and aliases are refused: nine lines of
    nested aliases expand to billions of values for whatever walks the result."""

    def resolve(self, kind, value, implicit):
        # No implicit YAML type (bool, int, float, null, timestamp) has a '/': a CIDR is a string without trying
        # each type's regex, which was most of the time 5 MB of CIDRs took to read.
        if kind is yaml.ScalarNode and implicit[0] and "/" in value:
            return "tag:yaml.org,2002:str"
        return super().resolve(kind, value, implicit)

    def construct_object(self, node, deep=False):
        if node in self.constructed_objects or node in self.recursive_objects:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                "this anchored value is used again through an alias (*name): aliases are not allowed here, write "
                "the value out",
                node.start_mark,
            )
        return super().construct_object(node, deep)

    def construct_mapping(self, node, deep=False):
        mapping = super().construct_mapping(node, deep)
        if len(mapping) < len(node.value):
            seen = set()
            for key_node, _value in node.value:
                key = self.constructed_objects[key_node]
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "in the mapping",
                        node.start_mark,
                        f"duplicate key {shown(key)}: the second would silently replace the first",
                        key_node.start_mark,
                    )
                seen.add(key)
        return mapping


@contextmanager
def without_cyclic_gc():
    """Large files make 100,000s of small objects (YAML nodes, tuples), none of them in a reference cycle; the
    cyclic collector's repeated passes over them took a third of the time, and more the more memory was in use."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@without_cyclic_gc()
def read_documents(src: str) -> list[tuple[str, object]]:
    """Parsed YAML of src (a file, or every *.yml/*.yaml in a directory, in name order) with each file's path.
    An empty file reads as an empty mapping."""
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
                data = yaml.load(handle, Loader=UserDataLoader)
            documents.append((path, {} if data is None else data))
        except yaml.YAMLError as error:
            raise AnsibleActionFail(f"{path}: not valid YAML: {error}") from error
        except UnicodeDecodeError as error:
            raise AnsibleActionFail(f"{path}: not UTF-8 text: {error}") from error
    return documents
