"""Whitelist benchmark: how long a 100,000-CIDR whitelist takes from data to a live nginx, and what its lookup costs
per request compared with no whitelist and with the same list written as allow/deny lines.

Prints a Markdown report on stdout (progress on stderr). Exits 1 only when nginx decides wrongly (a listed client
not served, an unlisted one not refused) or fails to run; a missed goal is reported as "goal missed".
See README.md in this directory for the method.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from itertools import pairwise
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "collections"))

import yaml
from ansible_collections.infra.obs.plugins.plugin_utils.userdata import read_documents
from ansible_collections.infra.obs.plugins.plugin_utils.whitelist import compile_nginx, load

ROOT = Path(__file__).resolve().parents[2]
COMPILER = "collections/ansible_collections/infra/obs/plugins/plugin_utils/whitelist.py"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
BACKEND = "app"
GROUPS = 4
IPV6_SHARE = 10  # one entry in ten is IPv6
# Prefix lengths drawn for the random entries, weighted like real allow lists: mostly single hosts and whole blocks.
V4_PREFIXES = {32: 50, 30: 5, 29: 5, 28: 5, 27: 5, 26: 5, 24: 25}
V6_PREFIXES = {128: 20, 64: 30, 56: 20, 48: 30}
LISTED = "127.0.0.1"  # wrk's source address: the only 127.0.0.0/8 entry in the list
UNLISTED = "127.0.0.2"  # also a loopback source, but no entry covers it
STATIC = "bench.html"  # requested by name: "/" would add an internal redirect (and a second access check)
STATIC_BODY = b"<!DOCTYPE html>\n<title>whitelist bench</title>\n" + b"<p>" + b"x" * 540 + b"</p>\n"
PIPELINE_GOAL = 2.0
GEO_GOAL = 0.95
STEPS = {
    "validate": "validate (`load`)",
    "compile": "compile (`compile_nginx`) and write",
    "test": "`nginx -t` on the full config",
    "reload": "reload: SIGHUP until the new config answers and the old workers have exited",
}
ANSWERED = "(part of the reload: until the new config first answers)"
# One large file, as the hardening issue found it: 5 MB, read + validate + compile within FILE_GOAL seconds.
FILE_ENTRIES = 215_000
FILE_GOAL = 2.0
# Nine lines of nested aliases (9**9 strings once expanded): refused within BOMB_SECONDS and BOMB_MB of memory.
ALIAS_BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{name}: &{name} [{', '.join(['*' + inner] * 9)}]\n" for inner, name in zip("abcdefgh", "bcdefghi", strict=True)
)
BOMB_SECONDS, BOMB_MB = 1.0, 100
FILE_STEPS = {
    "read": "read (`read_documents`: libyaml, duplicate keys and aliases refused)",
    "validate": "validate (`load`)",
    "compile": "compile (`compile_nginx`)",
    "peer read": "peer: read with PyYAML's SafeLoader (round 1's reader)",
}
# A validation slower than this is not repeated: more runs would not change the verdict, only take hours.
REPEAT_LIMIT = 10 * PIPELINE_GOAL


class BenchFailure(Exception):
    """nginx decided or behaved wrongly: the figures would mean nothing."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="pipeline runs and interleaved wrk rounds (default 5)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections (default 50)")
    parser.add_argument("--entries", type=int, default=100_000, help="CIDRs in the whitelist (default 100000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random CIDRs (default 1)")
    args = parser.parse_args()
    if args.rounds < 1 or args.duration < 1 or args.connections < 1 or args.entries < 2:
        parser.error("--rounds, --duration and --connections must be at least 1, --entries at least 2")
    return args


def random_cidrs(count: int, seed: int) -> list[str]:
    """count distinct CIDRs, each alone in its own IPv4 /24 or IPv6 /48 so that none overlaps another, and none in
    127.0.0.0/8 except 127.0.0.1/32 (last), so that 127.0.0.2 is a client the list does not cover."""
    rng = random.Random(seed)
    v6_count = count // IPV6_SHARE
    v4_count = count - v6_count - 1
    cidrs = []
    # /24 blocks of the unicast first octets 1-126 and 128-223: index i skips 0.0.0.0/8 and 127.0.0.0/8.
    v4_blocks = rng.sample(range(222 << 16), v4_count)
    v4_prefixes = rng.choices(list(V4_PREFIXES), list(V4_PREFIXES.values()), k=v4_count)
    for index, prefix in zip(v4_blocks, v4_prefixes, strict=True):
        block = index + ((1 if index < 126 << 16 else 2) << 16)
        subnet = rng.randrange(1 << (prefix - 24)) << (32 - prefix)
        cidrs.append(f"{ipaddress.IPv4Address((block << 8) | subnet)}/{prefix}")
    # /48 blocks inside 2000::/3 (global unicast), far from the IPv4-mapped range the loader refuses.
    v6_blocks = rng.sample(range(1 << 45), v6_count)
    v6_prefixes = rng.choices(list(V6_PREFIXES), list(V6_PREFIXES.values()), k=v6_count)
    for index, prefix in zip(v6_blocks, v6_prefixes, strict=True):
        subnet = rng.getrandbits(prefix - 48) << (128 - prefix) if prefix > 48 else 0
        cidrs.append(f"{ipaddress.IPv6Address(((1 << 45 | index) << 80) | subnet)}/{prefix}")
    rng.shuffle(cidrs)
    return [*cidrs, f"{LISTED}/32"]


def documents(cidrs: list[str], port: int) -> list[tuple[str, object]]:
    """The whitelist as the action plugin hands it to load(): one file per group, one for the backend and rule."""
    groups = [f"clients-{index}" for index in range(GROUPS)]
    parts: list[list[str]] = [[] for _ in groups]
    for index, cidr in enumerate(cidrs):
        parts[index % GROUPS].append(cidr)
    # The upstream never gets a request: the bench only needs the compiled config to load and answer.
    backend = {"protocol": "http", "listen": port, "upstreams": [f"127.0.0.1:{free_port()}"]}
    return [
        *((f"{name}.yml", {"groups": {name: {"cidrs": part}}}) for name, part in zip(groups, parts, strict=True)),
        (f"{BACKEND}.yml", {"backends": {BACKEND: backend}, "rules": [{"backend": BACKEND, "groups": groups}]}),
    ]


def large_file(cidrs: list[str], path: Path) -> None:
    """The whole whitelist in one YAML file, one CIDR per line."""
    lines = ["groups:", "  clients:", "    cidrs:", *(f"      - {cidr}" for cidr in cidrs)]
    lines += [
        "backends:",
        f"  {BACKEND}: {{protocol: http, listen: {free_port()}, upstreams: ['127.0.0.1:{free_port()}']}}",
        "rules:",
        f"  - {{backend: {BACKEND}, groups: [clients]}}",
    ]
    path.write_text("\n".join(lines) + "\n")


def files(args: argparse.Namespace, workdir: Path) -> dict:
    """One 5 MB file: read (ours, and PyYAML's Python SafeLoader, round 1's reader, as the peer), validate and
    compile; then the alias bomb in a process of its own, for its memory."""
    path = workdir / "large.yml"
    large_file(random_cidrs(FILE_ENTRIES, args.seed), path)
    log = str(workdir / "decisions.log")
    seconds: dict[str, list[float]] = {step: [] for step in FILE_STEPS}
    # Our rounds first, then the peer's: its 11 s of Python objects left our next round a heap no real run has
    # (validate 1.5-1.7 s before the first peer read, 2.1-2.2 s after).
    *ours, peer = FILE_STEPS
    for _ in range(args.rounds):
        marks = [time.perf_counter()]
        documents = read_documents(str(path))
        marks.append(time.perf_counter())
        whitelist = load(documents)
        marks.append(time.perf_counter())
        compile_nginx(whitelist, access_log=log)
        marks.append(time.perf_counter())
        del documents, whitelist
        for step, (start, end) in zip(ours, pairwise(marks), strict=True):
            seconds[step].append(end - start)
        progress(f"{FILE_ENTRIES:,}-CIDR file: " + ", ".join(f"{s} {seconds[s][-1]:.3f} s" for s in ours))
    for _ in range(args.rounds):
        start = time.perf_counter()
        with path.open(encoding="utf-8") as handle:
            yaml.load(handle, Loader=yaml.SafeLoader)
        seconds[peer].append(time.perf_counter() - start)
        progress(f"{FILE_ENTRIES:,}-CIDR file: {peer} {seconds[peer][-1]:.3f} s")
    bomb = workdir / "bomb.yml"
    bomb.write_text(ALIAS_BOMB)
    probe = (
        "import json, resource, sys, time\n"
        f"sys.path.insert(0, {str(ROOT / 'collections')!r})\n"
        "from ansible_collections.infra.obs.plugins.plugin_utils.userdata import read_documents\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "start = time.perf_counter()\n"
        "try:\n"
        f"    read_documents({str(bomb)!r})\n"
        "    refused = ''\n"
        "except Exception as error:\n"
        "    refused = str(error)\n"
        "seconds = time.perf_counter() - start\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'seconds': seconds, 'peak_kb': after, 'grown_kb': after - before, 'refused': refused}))\n"
    )
    measured = json.loads(
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    )
    if not measured["refused"]:
        raise BenchFailure("the alias bomb was read instead of refused")
    progress(f"alias bomb: {measured['seconds']:.3f} s, peak {measured['peak_kb'] / 1024:.0f} MB")
    return {"seconds": seconds, "size": path.stat().st_size, "bomb": measured}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def replace_once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise BenchFailure(f"the compiled config no longer has exactly one {old.strip()!r}: update the bench")
    return text.replace(old, new)


def on_loopback(conf: str, port: int, bind: int) -> str:
    """A compiled server listens on every IPv4 and IPv6 address; the bench listens on 127.0.0.1:bind only."""
    conf = replace_once(conf, f"    listen [::]:{port};\n", "")
    return replace_once(conf, f"    listen {port};", f"    listen 127.0.0.1:{bind};")


def http_settings(prefix: Path) -> str:
    # Debian's nginx has absolute default temp paths under /var/lib/nginx: the bench keeps to its own directory.
    temp = "".join(f"    {kind}_temp_path {prefix}/tmp/{kind};\n" for kind in TEMP_PATHS)
    return f"    access_log off;\n{temp}"


def production_conf(prefix: Path, marker_port: int, generation: int) -> str:
    """The role's nginx.conf (stream module, both contexts, a small extra server) with private paths; the extra
    server answers the config generation, so a reload is over when it answers the new one."""
    return f"""load_module {STREAM_MODULE};
worker_processes auto;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{
    worker_connections 4096;
}}
http {{
{http_settings(prefix)}    include {prefix}/http.conf;
    server {{
        listen 127.0.0.1:{marker_port};
        location = /generation {{
            return 200 "{generation}";
        }}
    }}
}}
stream {{
    include {prefix}/stream.conf;
}}
"""


def throughput_conf(prefix: Path, cpu: int | None) -> str:
    """One worker, pinned when there is a core for it alone, serving STATIC from prefix/html; servers in http.conf."""
    affinity = f"worker_cpu_affinity {1 << cpu:b};\n" if cpu is not None else ""
    return f"""worker_processes 1;
{affinity}pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{
    worker_connections 4096;
}}
http {{
{http_settings(prefix)}    root {prefix}/html;
    include {prefix}/http.conf;
}}
"""


class Nginx:
    """A private nginx (own prefix, config, pid file and logs, loopback ports only), run in the foreground in its
    own session so that Ctrl-C reaches the bench, which then stops it."""

    def __init__(self, prefix: Path):
        self.prefix = prefix
        (prefix / "tmp").mkdir(parents=True)
        self.args = ["-p", f"{prefix}/", "-e", f"{prefix}/error.log", "-c", f"{prefix}/nginx.conf"]
        self.process: subprocess.Popen | None = None

    def write(self, files: dict[str, str]) -> None:
        for name, text in files.items():
            (self.prefix / name).write_text(text)

    def test(self) -> None:
        result = subprocess.run([NGINX, "-t", "-q", *self.args], capture_output=True, text=True)
        if result.returncode:
            raise BenchFailure(f"nginx -t failed for {self.prefix}/nginx.conf:\n{result.stderr}")

    def start(self, port: int) -> None:
        self.process = subprocess.Popen([NGINX, *self.args, "-g", "daemon off;"], start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.process.poll() is None:
            with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
            time.sleep(0.01)
        raise BenchFailure(f"nginx did not start on port {port}:\n{self.error_log()}")

    def error_log(self) -> str:
        log = self.prefix / "error.log"
        return log.read_text() if log.exists() else "(no error log)"

    def workers(self) -> set[int]:
        master = self.process.pid
        return {int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()}

    def reload(self, marker_port: int, generation: int) -> float:
        """SIGHUP, then wait until the new config answers and every old worker has exited; returns when (in
        perf_counter time) the new config answered first."""
        old = self.workers()
        os.kill(self.process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 60
        answered = None
        while answered is None or any(running(pid) for pid in old):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise BenchFailure(f"nginx did not reload to generation {generation}:\n{self.error_log()}")
            if answered is None and fetch(marker_port, "/generation") == (200, str(generation).encode()):
                answered = time.perf_counter()
            time.sleep(0.001)
        return answered

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        workers = self.workers()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            for pid in (self.process.pid, *workers):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.wait()


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def fetch(port: int, path: str, source: str = LISTED) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def pipeline(args: argparse.Namespace, cidrs: list[str], workdir: Path, stack: ExitStack) -> dict:
    """Validate, then compile, nginx -t and reload a running nginx, args.rounds times each: seconds per step."""
    port, marker_port = free_port(), free_port()
    docs = documents(cidrs, port)
    samples: dict[str, list[float]] = {step: [] for step in [*STEPS, ANSWERED]}
    for _ in range(args.rounds):
        start = time.perf_counter()
        whitelist = load(docs)
        samples["validate"].append(time.perf_counter() - start)
        progress(f"validate: {samples['validate'][-1]:.3f} s")
        if samples["validate"][-1] > REPEAT_LIMIT:
            progress(f"validate took more than {REPEAT_LIMIT:g} s: not repeated")
            break
    nginx = Nginx(workdir / "pipeline")

    def compile_and_write(generation: int) -> str:
        """Writes the config of this generation; returns the compiled http.conf as compile_nginx made it."""
        files = compile_nginx(whitelist, access_log=f"{nginx.prefix}/decisions.log")
        http_conf = on_loopback(files["http.conf"], port, port)
        nginx.write(
            {**files, "http.conf": http_conf, "nginx.conf": production_conf(nginx.prefix, marker_port, generation)}
        )
        return files["http.conf"]

    # Generation 0 is the config nginx runs before the first timed reload: the same list, as after a small change.
    http_conf = compile_and_write(0)
    nginx.test()
    nginx.start(marker_port)
    stack.callback(nginx.stop)
    for generation in range(1, args.rounds + 1):
        marks = [time.perf_counter()]
        http_conf = compile_and_write(generation)
        marks.append(time.perf_counter())
        nginx.test()
        marks.append(time.perf_counter())
        answered = nginx.reload(marker_port, generation)
        marks.append(time.perf_counter())
        for step, seconds in zip(("compile", "test", "reload"), pairwise(marks), strict=True):
            samples[step].append(seconds[1] - seconds[0])
        samples[ANSWERED].append(answered - marks[-2])
        progress(
            f"round {generation}/{args.rounds}: compile, nginx -t, reload "
            + ", ".join(f"{samples[step][-1]:.3f} s" for step in ("compile", "test", "reload"))
        )
    nginx.stop()
    return {
        "samples": samples,
        "http_conf": http_conf,
        "port": port,
        "warnings": len(whitelist.warnings),
        "size": len(http_conf.encode()),
    }


def geo_entries(http_conf: str) -> list[str]:
    """The networks of the compiled geo map (what nginx really looks up), in its order."""
    blocks = re.findall(r"^geo \$remote_addr \S+ \{\n    default 0;\n(.*?)^\}", http_conf, re.MULTILINE | re.DOTALL)
    if len(blocks) != 1:
        raise BenchFailure(f"expected one geo map in the compiled config, found {len(blocks)}")
    entries = re.findall(r"^    (\S+) 1;$", blocks[0], re.MULTILINE)
    if f"{LISTED}/32" not in entries:
        raise BenchFailure(f"{LISTED}/32 is not in the compiled geo map: wrk's requests would not be a real hit")
    return entries


def throughput_configs(http_conf: str, port: int, entries: list[str]) -> dict[str, Callable[[int], str]]:
    """Config name -> http.conf of a server on the given port that serves STATIC (with a whitelist: to the listed
    client only)."""

    def none(bind: int) -> str:
        return f"server {{\n    listen 127.0.0.1:{bind};\n}}\n"

    def geo(bind: int) -> str:
        # The compiled server as it is, minus its decision log (the other configs log nothing) and with the static
        # file in place of proxy_pass, so that only the lookup and its 403 check differ from "none".
        decision_log = r"^    access_log \S+ infra_obs_whitelist;\n"
        text, logs = re.subn(decision_log, "", on_loopback(http_conf, port, bind), flags=re.MULTILINE)
        if logs != 1:
            raise BenchFailure("the compiled server no longer has exactly one decision log: update the bench")
        return replace_once(text, f"        proxy_pass http://infra_obs_{BACKEND};\n", "")

    def allow_deny(bind: int) -> str:
        # nginx checks allow/deny in order, so the listed client is last: the worst case, as with a long list.
        lines = [f"        allow {entry};\n" for entry in entries if entry != f"{LISTED}/32"]
        body = "".join([*lines, f"        allow {LISTED}/32;\n", "        deny all;\n"])
        return f"server {{\n    listen 127.0.0.1:{bind};\n    location / {{\n{body}    }}\n}}\n"

    return {"none": none, "geo": geo, "allow-deny": allow_deny}


def check_access(name: str, port: int, whitelisted: bool) -> None:
    """The listed client gets the file; the unlisted one gets 403 (or the file, without a whitelist)."""
    expected = {LISTED: 200, UNLISTED: 403 if whitelisted else 200}
    for source, status in expected.items():
        got, body = fetch(port, f"/{STATIC}", source)
        if got != status or (status == 200 and body != STATIC_BODY):
            raise BenchFailure(f"{name}: a request from {source} got {got}, expected {status} with the static file")
    progress(f"{name}: {LISTED} gets 200, {UNLISTED} gets {expected[UNLISTED]}, as expected")


def wrk_binary() -> tuple[str, bool]:
    """The wrk program, and whether the bench had to install it."""
    found = shutil.which("wrk")
    if found:
        return found, False
    progress("wrk is missing: installing the Debian package wrk (apt-get install -y wrk)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, stdout=subprocess.DEVNULL).returncode:
        subprocess.run(["apt-get", "update"], env=env, stdout=subprocess.DEVNULL, check=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, stdout=subprocess.DEVNULL, check=True)
    found = shutil.which("wrk")
    if not found:
        raise BenchFailure("wrk is still missing after apt-get install wrk")
    return found, True


def wrk(command: list[str], name: str) -> tuple[float, str]:
    """Requests per second of one run, and its socket errors if any. Any non-2xx answer is a failure: the
    listed client must always be served."""
    result = subprocess.run(command, capture_output=True, text=True)
    rate = re.search(r"^Requests/sec:\s+([0-9.]+)", result.stdout, re.MULTILINE)
    if result.returncode or not rate:
        raise BenchFailure(f"wrk failed against {name}:\n{result.stdout}{result.stderr}")
    if "Non-2xx or 3xx responses" in result.stdout:
        raise BenchFailure(f"{name}: the listed client got refused under load:\n{result.stdout}")
    errors = re.search(r"Socket errors: (.*)", result.stdout)
    return float(rate.group(1)), errors.group(1) if errors else ""


def throughput(args: argparse.Namespace, piped: dict, workdir: Path, stack: ExitStack) -> dict:
    """Median req/s of each config over args.rounds interleaved wrk runs."""
    wrk_path, installed = wrk_binary()
    entries = geo_entries(piped["http_conf"])
    # nginx's single worker on one core and wrk on another, so the client never takes the server's CPU time.
    cpus = sorted(os.sched_getaffinity(0))
    nginx_cpu, wrk_cpu = (cpus[0], cpus[1]) if len(cpus) > 1 else (None, None)
    pin = ["taskset", "-c", str(wrk_cpu)] if wrk_cpu is not None else []
    servers = {}
    for name, render in throughput_configs(piped["http_conf"], piped["port"], entries).items():
        nginx, port = Nginx(workdir / name), free_port()
        (nginx.prefix / "html").mkdir()
        (nginx.prefix / "html" / STATIC).write_bytes(STATIC_BODY)
        nginx.write({"nginx.conf": throughput_conf(nginx.prefix, nginx_cpu), "http.conf": render(port)})
        nginx.test()
        nginx.start(port)
        stack.callback(nginx.stop)
        check_access(name, port, whitelisted=name != "none")
        url = f"http://127.0.0.1:{port}/{STATIC}"
        servers[name] = [*pin, wrk_path, "-t1", f"-c{args.connections}", "--timeout", "10s", url]
    for name, command in servers.items():
        wrk([*command, "-d1s"], name)  # warm-up, not counted: first connections, page cache, CPU frequency
    rates: dict[str, list[float]] = {name: [] for name in servers}
    errors = []
    for round_ in range(1, args.rounds + 1):
        for name, command in servers.items():
            rate, socket_errors = wrk([*command, f"-d{args.duration}s"], name)
            rates[name].append(rate)
            if socket_errors:
                errors.append(f"round {round_}, {name}: socket errors {socket_errors}")
            progress(f"wrk round {round_}/{args.rounds}, {name}: {rate:,.0f} req/s")
    return {"rates": rates, "errors": errors, "installed": installed, "entries": len(entries), "pinned": pin != []}


def compiler_version() -> str:
    """The commit measured, and whether the compiler had uncommitted changes: figures move with the code."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()

    changed = ", with uncommitted changes" if git("status", "--porcelain", "--", COMPILER) else ""
    return f"commit {git('rev-parse', '--short', 'HEAD') or 'unknown'}{changed}"


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_average() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def verdict(met: bool) -> str:
    return "goal met" if met else "goal missed"


def report(args: argparse.Namespace, cidrs: list[str], piped: dict, measured: dict, start: dict[str, str]) -> None:
    version = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip().split("/")[-1]
    ipv6 = sum(":" in cidr for cidr in cidrs)
    samples = piped["samples"]
    medians = {step: statistics.median(values) for step, values in samples.items()}
    total = sum(medians[step] for step in STEPS)
    lines = [
        f"nginx {version}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average (1/5/15 min) "
        f"{start['load']} at the start, {load_average()} at the end. whitelist.py: {start['compiler']}.",
        "",
        f"### From data to live nginx: {len(cidrs):,} CIDRs, median of up to {args.rounds} runs per step",
        "",
        f"{len(cidrs) - ipv6:,} IPv4 and {ipv6:,} IPv6 CIDRs (seed {args.seed}) in {GROUPS} groups, one http backend; "
        f"{measured['entries']:,} geo entries after collapsing, http.conf {piped['size'] / 1e6:.1f} MB, "
        f"{piped['warnings']} loader warnings. A validation slower than {REPEAT_LIMIT:g} s is not repeated.",
        "",
        "| step | runs | median | min | max |",
        "|---|---:|---:|---:|---:|",
    ]
    for step, label in [*STEPS.items(), (ANSWERED, ANSWERED)]:
        values = samples[step]
        lines.append(f"| {label} | {len(values)} | {medians[step]:.3f} s | {min(values):.3f} s | {max(values):.3f} s |")
    lines += [
        f"| **total** (sum of the four medians) | | **{total:.3f} s** | | |",
        "",
        f"Goal: total within {PIPELINE_GOAL:g} s: {verdict(total <= PIPELINE_GOAL)} ({total:.3f} s).",
        "",
        f"### Requests per second: static file, 1 worker, median of {args.rounds} interleaved rounds",
        "",
        f"wrk -t1 -c{args.connections} -d{args.duration}s from {LISTED} "
        f"({'wrk and the nginx worker pinned to different cores' if measured['pinned'] else 'not pinned: one CPU'}).",
        "",
        "| config | median req/s | min | max | ratio to no whitelist |",
        "|---|---:|---:|---:|---:|",
    ]
    entries = measured["entries"]
    labels = {
        "none": "no whitelist",
        "geo": f"geo map, {entries:,} entries (compiled)",
        "allow-deny": f"allow/deny, {entries:,} lines, client last",
    }
    rates = measured["rates"]
    ratios = {name: statistics.median(values) / statistics.median(rates["none"]) for name, values in rates.items()}
    for name, values in rates.items():
        row = f"{statistics.median(values):,.0f} | {min(values):,.0f} | {max(values):,.0f} | {ratios[name]:.2f}x"
        lines.append(f"| {labels[name]} | {row} |")
    geo_ratio, allow_ratio = ratios["geo"], ratios["allow-deny"]
    lines += [
        "",
        f"Ratios: geo/none {geo_ratio:.3f}x, allow-deny/none {allow_ratio:.3f}x. "
        f"Goal: geo at least {GEO_GOAL:g}x: {verdict(geo_ratio >= GEO_GOAL)} ({geo_ratio:.3f}x).",
    ]
    if measured["installed"]:
        lines += ["", "Note: wrk was missing; the bench installed the Debian package wrk."]
    if measured["errors"]:
        lines += ["", "wrk socket errors:", *(f"- {error}" for error in measured["errors"])]
    print("\n".join(lines))


def report_files(args: argparse.Namespace, filed: dict) -> None:
    medians = {step: statistics.median(values) for step, values in filed["seconds"].items()}
    checked = medians["validate"] + medians["compile"]
    bomb = filed["bomb"]
    grown_mb = bomb["grown_kb"] / 1024
    lines = [
        "",
        f"### One large file and an alias bomb: median of {args.rounds} runs",
        "",
        f"{FILE_ENTRIES:,} CIDRs in one {filed['size'] / 1e6:.1f} MB file.",
        "",
        "| step | median | min | max |",
        "|---|---:|---:|---:|",
    ]
    for step, label in FILE_STEPS.items():
        values = filed["seconds"][step]
        lines.append(f"| {label} | {medians[step]:.3f} s | {min(values):.3f} s | {max(values):.3f} s |")
    lines += [
        "",
        f"Read: ours/peer {medians['read'] / medians['peer read']:.2f}x. Goal: validate + compile within "
        f"{FILE_GOAL:g} s: {verdict(checked <= FILE_GOAL)} ({checked:.3f} s).",
        "",
        f"Alias bomb ({len(ALIAS_BOMB)} bytes, nine lines): refused in {bomb['seconds']:.3f} s, the process grew by "
        f"{grown_mb:.1f} MB while reading it (peak {bomb['peak_kb'] / 1024:.0f} MB, mostly Python and ansible's "
        f'modules): "{bomb["refused"].splitlines()[0]}". Goal: within {BOMB_SECONDS:g} s and {BOMB_MB} MB: '
        f"{verdict(bomb['seconds'] <= BOMB_SECONDS and grown_mb <= BOMB_MB)}.",
    ]
    print("\n".join(lines))


def main() -> int:
    args = parse_args()
    # A SIGTERM unwinds like Ctrl-C, so the nginx processes are stopped and the temporary files removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # Taken before anything runs: the compiler may be committed to while the bench runs.
    start = {"load": load_average(), "compiler": compiler_version()}
    cidrs = random_cidrs(args.entries, args.seed)
    try:
        with ExitStack() as stack:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-whitelist-")))
            workdir.chmod(0o755)  # nginx workers run as nobody and must read the static file
            filed = files(args, workdir)
            piped = pipeline(args, cidrs, workdir, stack)
            measured = throughput(args, piped, workdir, stack)
    except BenchFailure as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: nginx stopped, temporary files removed", file=sys.stderr)
        return 130
    report(args, cidrs, piped, measured, start)
    report_files(args, filed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
