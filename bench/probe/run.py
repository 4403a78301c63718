"""Probe benchmark: infra-obs-probe against smokeping_prober, one after the other in one run, both probing the same
loopback addresses (127.1.x.y) with ICMP echo once a second, at 100, 1,000 and 10,000 targets; then the error of the
median RTT against a delay injected by a userspace responder in a network namespace of its own.

Prints a Markdown report on stdout (progress on stderr). Exits 1 only when a prober does not start, does not answer
a scrape, sends nothing or overruns its time bound; a missed goal is reported as "goal missed". Needs root (raw
ICMP sockets, a network namespace). See README.md in this directory for the method.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "probe" / "src"
RESPONDER = ROOT / "tests" / "probe" / "tools" / "icmp_delay_responder.py"
FETCH = ROOT / "scripts" / "fetch-smokeping-prober.sh"
WIRE = Path(__file__).resolve().parent / "wire_rtt.py"
TICKS = os.sysconf("SC_CLK_TCK")
OURS, THEIRS = "infra-obs-probe", "smokeping_prober"
PAYLOAD = 56  # ICMP data bytes, ping's default and both probers' default
STARTUP_TIMEOUT = 60.0
SCRAPE_TIMEOUT = 30.0
# Goals from the issue.
CPU_RATIO_GOAL = 0.1  # our CPU per probe / theirs, at 100 targets
SCALE_TARGETS = 10_000
SCALE_CORES = 1.0
SCALE_RECEIVED = 0.999
SCALE_RATE = 0.99  # probes sent per second / targets: "at 1 Hz"
SCALE_SCRAPE = 0.5  # seconds, asked for gzip as Prometheus asks
SCALE_WIRE_MB = 5.0  # MB on the wire
RTT_GOAL = 100e-6
DELAY_ERROR_GOAL = 0.2e-3
REFERENCE = (
    "Reference from the issue (smokeping_prober 0.9.0 on such a 2-core machine): 2.3 CPU-seconds per 1,000 probes at "
    "100 targets, both cores busy at 300 targets, 21% of the replies received at 1,000 targets, no loopback RTT under "
    "100 us."
)


class BenchFailure(Exception):
    """A prober did not start, did not answer a scrape or overran its time bound: its figures would mean nothing."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, nargs="+", default=[100, 1000, 10000], help="default 100 1000 10000")
    parser.add_argument("--window", type=float, default=30, help="measured seconds per run (default 30)")
    parser.add_argument("--warmup", type=float, default=10, help="seconds between start and window (default 10)")
    parser.add_argument(
        "--smokeping-max", type=int, default=1000, help="run smokeping_prober up to this many targets (default 1000)"
    )
    parser.add_argument("--smokeping", help="smokeping_prober binary (default: scripts/fetch-smokeping-prober.sh)")
    parser.add_argument("--delay", type=float, default=0.030, help="injected delay in seconds (default 0.030)")
    parser.add_argument("--delay-targets", type=int, default=5, help="targets of the delay test (default 5)")
    parser.add_argument("--delay-window", type=float, default=20, help="measured seconds of the delay test (def. 20)")
    parser.add_argument(
        "--no-chrt", action="store_true", help="run the delay responder without real-time priority (chrt -f 10)"
    )
    parser.add_argument("--quick", action="store_true", help="short run: window 5 s, warm-up 3 s, delay window 5 s")
    args = parser.parse_args()
    if args.quick:
        args.window, args.warmup, args.delay_window = 5.0, 3.0, 5.0
    if args.window < 2 or args.warmup < 0 or args.delay_window < 2 or min(args.targets) < 1:
        parser.error("--window and --delay-window must be at least 2 s, --warmup at least 0, targets at least 1")
    if not 1 <= args.delay_targets <= 250 or not 0 < args.delay < 1:
        parser.error("--delay-targets must be 1 to 250, --delay between 0 and 1 s")
    if os.geteuid() != 0:
        parser.error("needs root: raw ICMP sockets and a network namespace")
    return args


# --- processes -------------------------------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Process:
    """A child in a session of its own (Ctrl-C reaches the bench only, which then stops it), output in a log file,
    with a time bound: when it runs out the child is killed and the run fails."""

    def __init__(self, name: str, command: list[str], logdir: Path, stack: ExitStack, bound: float, **popen):
        self.name = name
        self.log = logdir / f"{re.sub(r'[^A-Za-z0-9]+', '-', name)}.log"
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(
                command, stdout=popen.pop("stdout", out), stderr=out, start_new_session=True, **popen
            )
        self.pid = self.popen.pid
        self.timed_out = False
        self.watchdog = threading.Timer(bound, self._expire)
        self.watchdog.daemon = True
        self.watchdog.start()
        stack.callback(self.stop)

    def _expire(self) -> None:
        self.timed_out = True
        with suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)

    def check(self) -> None:
        if self.timed_out:
            raise BenchFailure(f"{self.name} overran its time bound and was killed")
        if self.popen.poll() is not None:
            raise BenchFailure(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:]) or "(no output)"

    def stop(self) -> None:
        self.watchdog.cancel()
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait()


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of the process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def address(base: int, i: int) -> str:
    """127.<base>.0.1 upwards."""
    return socket.inet_ntoa(((127 << 24) + (base << 16) + i + 1).to_bytes(4, "big"))


def load_average() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


# --- HTTP, in this network namespace or another ----------------------------------------------------------------------

NS_GET = "import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1], timeout=30).read())"


class Client:
    """GETs from a prober: directly, or through nsenter into the prober's network namespace."""

    def __init__(self, port: int, netns: str | None = None):
        self.base = f"http://127.0.0.1:{port}"
        self.netns = netns

    def get(self, path: str, timeout: float = SCRAPE_TIMEOUT) -> bytes:
        url = self.base + path
        if self.netns is None:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.read()
        command = ["nsenter", f"--net={self.netns}", "--", sys.executable, "-c", NS_GET, url]
        try:
            result = subprocess.run(command, capture_output=True, timeout=timeout + 5)
        except subprocess.TimeoutExpired:
            raise OSError(f"GET {url} in {self.netns} timed out") from None
        if result.returncode:
            raise OSError(f"GET {url} in {self.netns}: {result.stderr.decode(errors='replace').strip()[-300:]}")
        return result.stdout

    def timed_scrape(self, process: Process) -> tuple[float, int]:
        """Seconds and bytes on the wire of one /metrics asked for as Prometheus asks (gzip, where offered); through
        nsenter (the delay runs) the plain body, its time including the nsenter process's start."""
        start = time.perf_counter()
        if self.netns is not None:
            body = self.scrape(process)
            return time.perf_counter() - start, len(body)
        request = urllib.request.Request(self.base + "/metrics", headers={"Accept-Encoding": "gzip"})
        try:
            with urllib.request.urlopen(request, timeout=SCRAPE_TIMEOUT) as response:
                size = len(response.read())
        except OSError as error:
            process.check()
            raise BenchFailure(f"{process.name}: GET /metrics failed: {error}") from None
        return time.perf_counter() - start, size

    def scrape(self, process: Process, path: str = "/metrics") -> bytes:
        try:
            return self.get(path)
        except OSError as error:
            process.check()
            raise BenchFailure(f"{process.name}: GET {path} failed: {error}") from None

    def wait_ready(self, process: Process, path: str) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            process.check()
            with suppress(OSError):
                self.get(path, timeout=2)
                return
            time.sleep(0.2)
        raise BenchFailure(f"{process.name} did not answer {path} within {STARTUP_TIMEOUT:g} s:\n{process.tail()}")


# --- Prometheus text format ------------------------------------------------------------------------------------------

LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", re.MULTILINE)
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class Scrape:
    """The per-path series of one prober in one scrape, keyed by destination address."""

    sent: dict[str, float] = field(default_factory=dict)
    received: dict[str, float] = field(default_factory=dict)
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)  # address -> le -> cumulative count
    other: dict[str, float] = field(default_factory=dict)  # unlabelled or summed series, by name


@dataclass(frozen=True)
class Flavour:
    """What tells one prober's series apart."""

    sent: str
    received: str
    bucket: str
    key: str  # label holding the destination address
    bucket_key: str  # label telling the histograms apart (ours are per destination AZ, theirs per host)
    only: dict[str, str]  # labels a per-path counter must have
    totals: tuple[str, ...]  # series summed over their labels, for the notes


OUR_SERIES = Flavour(
    "infra_obs_probe_sent_total",
    "infra_obs_probe_received_total",
    "infra_obs_probe_az_rtt_seconds_bucket",
    "target",
    "dst_az",
    {"probe": "icmp"},
    ("infra_obs_probe_skipped_total", "infra_obs_probe_send_errors_total", "infra_obs_probe_unmatched_replies_total"),
)
THEIR_SERIES = Flavour(
    "smokeping_requests_total",
    "smokeping_response_duration_seconds_count",
    "smokeping_response_duration_seconds_bucket",
    "host",
    "host",
    {},
    ("smokeping_send_errors_total", "smokeping_receive_errors_total", "smokeping_response_duplicates_total"),
)


def parse(text: str, flavour: Flavour) -> Scrape:
    scrape = Scrape()
    wanted = (flavour.sent, flavour.received, flavour.bucket)
    for name, labels, value in LINE.findall(text):
        if name in flavour.totals:
            scrape.other[name] = scrape.other.get(name, 0.0) + float(value)
        if name not in wanted:
            continue
        labelled = dict(LABEL.findall(labels))
        if name == flavour.bucket:
            scrape.buckets.setdefault(labelled[flavour.bucket_key], {})[float(labelled["le"])] = float(value)
            continue
        if any(labelled.get(k) != v for k, v in flavour.only.items()):
            continue
        key = labelled[flavour.key]
        if name == flavour.sent:
            scrape.sent[key] = float(value)
        else:
            scrape.received[key] = float(value)
    return scrape


def bucket_quantile(buckets: dict[float, float], q: float) -> float | None:
    """The q-quantile of a histogram (cumulative counts by upper bound), interpolated linearly inside its bucket as
    Prometheus' histogram_quantile does (the first bucket starts at 0). None without samples."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if math.isinf(upper):
                return lower  # in the +Inf bucket: the highest finite bound, as Prometheus answers
            return lower + (upper - lower) * (rank - below) / (count - below) if count > below else upper
        lower, below = upper, count
    return lower


def delta_buckets(before: Scrape, after: Scrape, key: str) -> dict[float, float]:
    old = before.buckets.get(key, {})
    return {le: count - old.get(le, 0.0) for le, count in after.buckets.get(key, {}).items()}


# --- one run ---------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    prober: str
    targets: int
    load: str = ""
    failure: str = ""
    seconds: float = math.nan  # wall time of the CPU window
    counter_seconds: float = math.nan  # the time over which sent and received increased
    sent: float = 0.0
    received: float = 0.0
    cpu: float = math.nan
    rss: float = math.nan
    medians: dict[str, float] = field(default_factory=dict)  # destination -> its median RTT over the window
    window_scrapes: tuple[float, float] = (math.nan, math.nan)  # durations of the two scrapes around the window
    under_100us: float | None = None  # share of the window's replies in the le=0.0001 bucket
    scrape: float = math.nan
    scrape_mb: float = math.nan  # on the wire
    notes: dict[str, float] = field(default_factory=dict)

    @property
    def median_rtt(self) -> float | None:
        return statistics.median(self.medians.values()) if self.medians else None

    @property
    def rate(self) -> float:
        """Probes sent per second."""
        return self.sent / self.counter_seconds if self.counter_seconds > 0 else math.nan

    @property
    def cores(self) -> float:
        return self.cpu / self.seconds if self.seconds > 0 else math.nan

    @property
    def cpu_per_1000(self) -> float:
        """CPU seconds over the CPU window per 1,000 probes sent at the measured rate in that window."""
        probes = self.rate * self.seconds
        return self.cpu / probes * 1000 if probes > 0 else math.nan

    @property
    def received_ratio(self) -> float:
        return self.received / self.sent if self.sent else math.nan


def our_config(port: int, addresses: list[str], window: float) -> dict:
    return {
        "listen": f"127.0.0.1:{port}",
        "source": {"name": "bench", "region": "lab", "az": "lab-a"},
        "interval": 1.0,
        "timeout": 1.0,
        "window": window,
        # Raw, like smokeping_prober's privileged ICMP: the same kind of socket on both sides.
        "icmp": {"enabled": True, "payload_size": PAYLOAD, "socket": "raw"},
        "tcp": {"enabled": False},
        "mtr": {"enabled": False},
        "targets": {
            "static": [{"name": f"t{i}", "address": a, "region": "lab", "az": "lab-b"} for i, a in enumerate(addresses)]
        },
    }


def their_config(addresses: list[str]) -> dict:
    # The 0.9.0 format (README in the package's docs): groups of hosts with their interval, network and protocol;
    # protocol icmp is the privileged (raw socket) mode.
    return {"targets": [{"hosts": addresses, "interval": "1s", "network": "ip4", "protocol": "icmp", "size": PAYLOAD}]}


@dataclass
class Launch:
    """How to start one prober and read it."""

    prober: str
    command: list[str]
    ready_path: str
    flavour: Flavour
    client: Client
    env: dict[str, str] | None = None


def launch_for(
    prober: str, addresses: list[str], workdir: Path, smokeping: str, window: float, *, netns: str | None = None
) -> Launch:
    """The command line and config of one prober; inside netns (through nsenter) when given, where any port is free."""
    enter = ["nsenter", f"--net={netns}", "--"] if netns else []
    if prober == OURS:
        port = 9427 if netns else free_port()
        config = workdir / f"ours-{len(addresses)}.yml"
        config.write_text(yaml.safe_dump(our_config(port, addresses, window)))
        command = [*enter, sys.executable, "-m", "infra_obs_probe", "--config", str(config), "--log-level", "warning"]
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        return Launch(prober, command, "/-/healthy", OUR_SERIES, Client(port, netns), env)
    port = 9374 if netns else free_port()
    config = workdir / f"smokeping-{len(addresses)}.yml"
    config.write_text(yaml.safe_dump(their_config(addresses)))
    command = [
        *enter,
        smokeping,
        f"--config.file={config}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    return Launch(prober, command, "/-/healthy", THEIR_SERIES, Client(port, netns))


def measure(launch: Launch, addresses: list[str], args: argparse.Namespace, workdir: Path, window: float) -> Run:
    """Start, warm up, measure one window, scrape three times more, stop. Raises BenchFailure."""
    run = Run(launch.prober, len(addresses), load=load_average())
    bound = STARTUP_TIMEOUT + args.warmup + window + 6 * SCRAPE_TIMEOUT
    with ExitStack() as stack:
        process = Process(f"{launch.prober} {len(addresses)}", launch.command, workdir, stack, bound, env=launch.env)
        client = launch.client
        client.wait_ready(process, launch.ready_path)
        time.sleep(args.warmup)
        process.check()
        # CPU is read after one scrape and before the next, so that the window holds probing only. A prober reads
        # its counters at some point during a scrape (a slow scrape makes that point uncertain): the probe rate is
        # the counters' increase over the time between the middles of the two scrapes.
        s0 = time.monotonic()
        first = client.scrape(process)
        cpu0, e0 = cpu_seconds(process.pid), time.monotonic()
        time.sleep(window)
        cpu1, s1 = cpu_seconds(process.pid), time.monotonic()
        run.rss = rss_mib(process.pid)
        second = client.scrape(process)
        e1 = time.monotonic()
        paths = None
        if launch.prober == OURS:  # the raw samples since the window started
            since = math.ceil(time.monotonic() - e0)
            paths = json.loads(client.scrape(process, f"/paths.json?window={since}"))["paths"]
        timings = [client.timed_scrape(process) for _ in range(3)]
        process.check()
    run.cpu, run.seconds, run.window_scrapes = cpu1 - cpu0, s1 - e0, (e0 - s0, e1 - s1)
    run.counter_seconds = (s1 + e1) / 2 - (s0 + e0) / 2
    run.scrape = statistics.median(seconds for seconds, _size in timings)
    run.scrape_mb = statistics.median(size for _seconds, size in timings) / 1e6
    before, after = parse(first.decode(), launch.flavour), parse(second.decode(), launch.flavour)
    run.sent = sum(after.sent.values()) - sum(before.sent.values())
    run.received = sum(after.received.values()) - sum(before.received.values())
    run.notes = {name: value - before.other.get(name, 0.0) for name, value in after.other.items()}
    if not run.sent:
        raise BenchFailure(f"{launch.prober} sent no probe in the window")
    missing = set(addresses) - set(after.sent)
    if missing:
        raise BenchFailure(f"{launch.prober} has no series for {len(missing)} of the {len(addresses)} targets")
    # Share of replies at or under 100 us: exact from the histograms (both have a 0.0001 bound).
    total = under = 0.0
    for key in after.buckets:
        delta = delta_buckets(before, after, key)
        total += delta.get(math.inf, 0.0)
        under += delta.get(1e-4, 0.0)
    run.under_100us = under / total if total else None
    if paths is not None:  # ours: exact per-path medians of the raw samples of the window
        run.medians = {p["target"]: p["icmp"]["rtt_median_seconds"] for p in paths}
    else:  # theirs: per-host medians interpolated inside the histogram buckets of the window
        run.medians = {key: bucket_quantile(delta_buckets(before, after, key), 0.5) for key in after.buckets}
    run.medians = {key: value for key, value in run.medians.items() if value is not None}
    return run


# --- injected delay --------------------------------------------------------------------------------------------------


@dataclass
class DelayResult:
    prober: str
    failure: str = ""
    medians: dict[str, float] = field(default_factory=dict)  # destination -> the prober's median RTT
    wire: dict[str, float] = field(default_factory=dict)  # destination -> median RTT on lo (wire_rtt.py)
    sent: float = 0.0
    received: float = 0.0

    def errors(self, delay: float) -> list[float]:
        return [abs(m - delay) for m in self.medians.values()]

    def wire_errors(self) -> list[float]:
        return [abs(m - self.wire[key]) for key, m in self.medians.items() if key in self.wire]


def await_ready(process: Process, failure: str) -> None:
    """Wait up to 10 s for the child to print "ready" on its stdout; fail with its log otherwise."""
    ready, _, _ = select.select([process.popen.stdout], [], [], 10)
    if not ready or process.popen.stdout.readline().decode(errors="replace").strip() != "ready":
        process.check()
        raise BenchFailure(f"{failure}:\n{process.tail()}")


def delay_test(args: argparse.Namespace, workdir: Path, smokeping: str | None, meta: dict) -> list[DelayResult]:
    """Fresh network namespace (lo up, the kernel's echo replies off there only), the userspace responder holding
    every reply to 127.0.0.1 for args.delay, then each prober in turn against the same few addresses."""
    addresses = [address(3, i) for i in range(args.delay_targets)]
    results = []
    with ExitStack() as stack:
        setup = "ip link set lo up && sysctl -q -w net.ipv4.icmp_echo_ignore_all=1 && echo ready && exec cat >/dev/null"
        # The namespace lives as long as this holder (and whatever entered it); the holder ends with its stdin.
        holder = Process(
            "netns holder",
            ["unshare", "--net", "--", "sh", "-c", setup],
            workdir,
            stack,
            3 * STARTUP_TIMEOUT + 2 * (args.warmup + args.delay_window) + 20 * SCRAPE_TIMEOUT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        stack.callback(holder.popen.stdin.close)
        await_ready(holder, "could not set up the network namespace")
        netns = f"/proc/{holder.pid}/ns/net"
        inside = subprocess.run(
            ["nsenter", f"--net={netns}", "--", "sysctl", "-n", "net.ipv4.icmp_echo_ignore_all"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        if inside != "1" or Path("/proc/sys/net/ipv4/icmp_echo_ignore_all").read_text().strip() != "0":
            raise BenchFailure("icmp_echo_ignore_all is not 1 in the namespace and 0 outside it")
        # Real-time priority keeps the machine's load from delaying the responder's replies (it sleeps in select()
        # until a reply is due: timer slack and wake-up latency make it late); it is idle but for a few replies/s.
        chrt = [] if args.no_chrt or not shutil.which("chrt") else ["chrt", "--fifo", "10"]
        responder = Process(
            "icmp_delay_responder",
            [
                "nsenter",
                f"--net={netns}",
                "--",
                *chrt,
                sys.executable,
                str(RESPONDER),
                "--delay",
                str(args.delay),
                "--source",
                "127.0.0.1",
            ],
            workdir,
            stack,
            holder.watchdog.interval,
            stdout=subprocess.PIPE,
        )
        await_ready(responder, "icmp_delay_responder did not get ready")
        progress(f"delay test: namespace {netns}, responder holding replies to 127.0.0.1 for {args.delay * 1e3:g} ms")
        meta["responder"] = "run with real-time priority, chrt --fifo 10" if chrt else "run at normal priority"
        window = max(60.0, args.warmup + args.delay_window + 10)
        for prober in (OURS, THEIRS) if smokeping else (OURS,):
            launch = launch_for(prober, addresses, workdir, smokeping or "", window, netns=netns)
            result = DelayResult(prober)
            try:
                with ExitStack() as capture:
                    wire = Process(
                        f"wire_rtt {prober}",
                        ["nsenter", f"--net={netns}", "--", sys.executable, str(WIRE)],
                        workdir,
                        capture,
                        holder.watchdog.interval,
                        stdout=subprocess.PIPE,
                    )
                    await_ready(wire, "wire_rtt.py did not get ready")
                    run = measure(launch, addresses, args, workdir, args.delay_window)
                    wire.watchdog.cancel()
                    wire.popen.terminate()
                    out, _ = wire.popen.communicate(timeout=10)
                    if wire.popen.returncode:
                        raise BenchFailure(f"wire_rtt.py exited with {wire.popen.returncode}:\n{wire.tail()}")
                result.sent, result.received, result.medians = run.sent, run.received, run.medians
                result.wire = {key: statistics.median(rtts) for key, rtts in json.loads(out).items() if rtts}
            except BenchFailure as failure:
                result.failure = str(failure)
                progress(f"delay test, {prober}: FAILED: {failure}")
            results.append(result)
            responder.check()
    return results


# --- report ----------------------------------------------------------------------------------------------------------


def short(metric: str) -> str:
    return metric.removeprefix("infra_obs_probe_").removeprefix("smokeping_").removesuffix("_total")


def us(seconds: float | None) -> str:
    """An RTT: in us below 10 ms, else in ms."""
    if seconds is None or math.isnan(seconds):
        return "n/a"
    return f"{seconds * 1e6:,.0f} us" if seconds < 0.01 else f"{seconds * 1e3:,.1f} ms"


def ms(seconds: float | None) -> str:
    return "n/a" if seconds is None or math.isnan(seconds) else f"{seconds * 1e3:.3f} ms"


def pct(ratio: float | None) -> str:
    return "n/a" if ratio is None or math.isnan(ratio) else f"{ratio * 100:.2f}%"


def verdict(met: bool | None) -> str:
    return "not measured" if met is None else "goal met" if met else "goal missed"


def ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or math.isnan(ours) or math.isnan(theirs) or theirs == 0:
        return "n/a"
    return f"{ours / theirs:.3g}x"


def probe_version() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()

    status = git("status", "--porcelain", "--", "probe/src")
    changed = ", probe/src with uncommitted changes" if status else ""
    if status.startswith("?? probe/src/"):
        changed = ", probe/src not committed yet"
    return f"working tree at commit {git('rev-parse', '--short', 'HEAD') or 'unknown'}{changed}"


def table(runs: list[Run]) -> list[str]:
    lines = [
        "| targets | prober | probes/s | CPU (cores) | CPU s / 1,000 probes | received / sent | RSS | median RTT "
        "| replies <= 100 us | /metrics scrape | load (1/5/15) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        name = f"{run.prober} (bucket-interp.)" if run.prober == THEIRS else run.prober
        if run.failure:
            lines.append(f"| {run.targets:,} | {run.prober} | failed: {run.failure.splitlines()[0]} ||||||||| ")
            continue
        lines.append(
            f"| {run.targets:,} | {name} | {run.rate:,.0f} | {run.cores:.2f} | {run.cpu_per_1000:.3f} "
            f"| {pct(run.received_ratio)} | {run.rss:.0f} MiB | {us(run.median_rtt)} | {pct(run.under_100us)} "
            f"| {run.scrape:.3f} s ({run.scrape_mb:.2f} MB) | {run.load} |"
        )
    return lines


def goals(args: argparse.Namespace, runs: list[Run], delays: list[DelayResult]) -> list[str]:
    ok = {(r.prober, r.targets): r for r in runs if not r.failure}
    lines = ["### Goals", ""]
    ours100, theirs100 = ok.get((OURS, 100)), ok.get((THEIRS, 100))
    met = None
    text = "needs both probers at 100 targets"
    if ours100 and theirs100:
        value = ours100.cpu_per_1000 / theirs100.cpu_per_1000
        met = value <= CPU_RATIO_GOAL
        text = f"{value:.3f}x ({ours100.cpu_per_1000:.3f} vs {theirs100.cpu_per_1000:.3f} CPU s per 1,000 probes)"
    lines.append(
        f"- CPU per probe at 100 targets at most {CPU_RATIO_GOAL:g}x smokeping_prober's: {verdict(met)}, {text}"
    )
    scale = ok.get((OURS, SCALE_TARGETS))
    met, text = None, f"needs a run at {SCALE_TARGETS:,} targets"
    if scale:
        checks = {
            f"{scale.rate / SCALE_TARGETS:.4f} of 1 Hz (>= {SCALE_RATE:g})": scale.rate >= SCALE_RATE * SCALE_TARGETS,
            f"{scale.cores:.2f} cores (<= {SCALE_CORES:g})": scale.cores <= SCALE_CORES,
            f"{pct(scale.received_ratio)} received (>= {SCALE_RECEIVED * 100:g}%)": scale.received_ratio
            >= SCALE_RECEIVED,
            f"/metrics in {scale.scrape:.3f} s (< {SCALE_SCRAPE:g} s)": scale.scrape < SCALE_SCRAPE,
            f"{scale.scrape_mb:.2f} MB on the wire (< {SCALE_WIRE_MB:g} MB)": scale.scrape_mb < SCALE_WIRE_MB,
        }
        met = all(checks.values())
        text = ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in checks.items())
    lines.append(
        f"- {SCALE_TARGETS:,} targets at 1 Hz in one process on at most one core, >= 99.9% received, /metrics under "
        f"{SCALE_SCRAPE:g} s and {SCALE_WIRE_MB:g} MB: {verdict(met)}, {text}"
    )
    ours = [r for r in runs if r.prober == OURS and not r.failure]
    met = all(r.median_rtt is not None and r.median_rtt < RTT_GOAL for r in ours) if ours else None
    text = ", ".join(f"{us(r.median_rtt)} at {r.targets:,}" for r in ours)
    lines.append(f"- median loopback RTT under 100 us (every run of ours): {verdict(met)}, {text or 'no run'}")
    delay = next((d for d in delays if d.prober == OURS), None)
    met, text = None, "not run"
    if delay and delay.failure:
        text = f"failed: {delay.failure.splitlines()[0]}"
    elif delay and delay.medians:
        error = statistics.median(delay.errors(args.delay))
        met = error <= DELAY_ERROR_GOAL
        text = f"{ms(error)} (injected {ms(args.delay)}, {len(delay.medians)} paths)"
        if delay.wire:
            lateness = statistics.median(delay.wire.values()) - args.delay
            text += (
                f"; of which the responder's lateness on lo {ms(lateness)}, "
                f"ours against lo {ms(statistics.median(delay.wire_errors()))}"
            )
    lines.append(f"- median error at most 0.2 ms against an injected delay: {verdict(met)}, {text}")
    return lines


def report(args: argparse.Namespace, runs: list[Run], delays: list[DelayResult], meta: dict) -> None:
    lines = [
        f"infra-obs-probe {probe_version()} (Python {sys.version.split()[0]}) against smokeping_prober "
        f"{meta['smokeping_version']} ({meta['smokeping_from']}); {os.cpu_count()} CPUs, load average "
        f"{meta['load_start']} at the start, {load_average()} at the end.",
        "",
        f"### Loopback, 1 probe per target per second, {args.window:g} s window after a {args.warmup:g} s warm-up",
        "",
        f"Both probe the same addresses 127.1.0.1 upwards with {PAYLOAD}-byte ICMP echo over raw sockets (ours: one "
        "socket; smokeping_prober: one per target, privileged mode), one after the other. CPU from /proc/PID/stat "
        "(all threads), probes from each prober's own counters; median RTT = median of the per-target medians over "
        "the window (ours exact from /paths.json, smokeping_prober's interpolated inside its default buckets); "
        f"replies <= 100 us from both histograms (exact: both have a 100 us bound). smokeping_prober only up to "
        f"{args.smokeping_max:,} targets.",
        "",
        *table(runs),
        "",
        "Notes per run (counters' increase over the window; the two scrapes around the window):",
    ]
    for run in runs:
        if not run.failure:
            notes = ", ".join(f"{short(k)} {v:g}" for k, v in sorted(run.notes.items()))
            first, second = run.window_scrapes
            lines.append(
                f"- {run.targets:,} {run.prober}: {notes}; {len(run.medians):,} targets with an RTT; "
                f"scrapes {first:.3f} s and {second:.3f} s"
            )
    lines += ["", "### Ratios (ours / smokeping_prober)", ""]
    ok = {(r.prober, r.targets): r for r in runs if not r.failure}
    for n in sorted({r.targets for r in runs}):
        ours, theirs = ok.get((OURS, n)), ok.get((THEIRS, n))
        if ours and theirs:
            lines.append(
                f"- {n:,} targets: CPU per probe {ratio(ours.cpu_per_1000, theirs.cpu_per_1000)}, "
                f"CPU {ratio(ours.cores, theirs.cores)}, RSS {ratio(ours.rss, theirs.rss)}, "
                f"received/sent {ratio(ours.received_ratio, theirs.received_ratio)}, "
                f"median RTT {ratio(ours.median_rtt, theirs.median_rtt)}, "
                f"/metrics scrape time {ratio(ours.scrape, theirs.scrape)}"
            )
    lines += [
        "",
        f"### Injected delay: {ms(args.delay)}, {args.delay_targets} targets, {args.delay_window:g} s window",
        "",
        "A fresh network namespace (lo up, net.ipv4.icmp_echo_ignore_all=1 there only); "
        f"tests/probe/tools/icmp_delay_responder.py ({meta.get('responder', 'not started')}) answers from userspace "
        "and holds each reply to 127.0.0.1 for the delay, counted from the kernel's receive timestamp of the "
        "request; the probers run one after the other. Error per target = |its median RTT - delay|. "
        "bench/probe/wire_rtt.py times the same echoes on lo (kernel timestamps of request and reply): lo - delay is "
        "the responder's own lateness, |prober - lo| the prober's error against what really happened.",
        "",
        "| prober | method | received / sent | median RTT | median error | max error | on lo | error vs lo |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for d in delays:
        method = "exact (/paths.json)" if d.prober == OURS else "bucket-interpolated"
        received = pct(d.received / d.sent if d.sent else None)
        if d.failure:
            lines.append(f"| {d.prober} | {method} | failed: {d.failure.splitlines()[0]} ||||||")
        elif d.medians:
            errors, wire = d.errors(args.delay), d.wire_errors()
            lines.append(
                f"| {d.prober} | {method} | {received} | {ms(statistics.median(d.medians.values()))} "
                f"| {ms(statistics.median(errors))} | {ms(max(errors))} "
                f"| {ms(statistics.median(d.wire.values()) if d.wire else None)} "
                f"| {ms(statistics.median(wire) if wire else None)} |"
            )
        else:
            lines.append(f"| {d.prober} | {method} | {received} | n/a ||||")
    if not any(d.prober == THEIRS for d in delays):
        lines.append(f"| {THEIRS} | | not measured ||||||")
    lines += [
        "",
        f"received / sent: a probe in flight ({ms(args.delay)}) at an edge of the window counts on one side only, "
        "so it can be off by one probe per target.",
    ]
    lines += ["", *goals(args, runs, delays), "", REFERENCE]
    print("\n".join(lines))


# --- main ------------------------------------------------------------------------------------------------------------


def smokeping_binary(args: argparse.Namespace) -> tuple[str, str]:
    path = args.smokeping
    if not path:
        result = subprocess.run([str(FETCH)], stdout=subprocess.PIPE, text=True)
        if result.returncode:
            raise BenchFailure(f"{FETCH.name} failed")
        path = result.stdout.strip().splitlines()[-1]
    version = subprocess.run([path, "--version"], capture_output=True, text=True)
    match = re.search(r"version (\S+)", version.stdout + version.stderr)
    if version.returncode or not match:
        raise BenchFailure(f"{path} --version failed:\n{version.stderr}")
    return path, match.group(1)


def measured(launch: Launch, addresses: list[str], args: argparse.Namespace, workdir: Path) -> Run:
    """One run of the comparison; a failure is recorded in the run, reported and counted at the end."""
    label = f"{len(addresses):,} targets, {launch.prober}"
    progress(f"{label}: starting (load {load_average()})")
    try:
        run = measure(launch, addresses, args, workdir, args.window)
    except BenchFailure as failure:
        progress(f"{label}: FAILED: {failure}")
        return Run(launch.prober, len(addresses), load=load_average(), failure=str(failure))
    progress(
        f"{label}: {run.cpu_per_1000:.3f} CPU s/1,000 probes, {run.cores:.2f} cores, {pct(run.received_ratio)} "
        f"received, median RTT {us(run.median_rtt)}, scrape {run.scrape:.3f} s"
    )
    return run


def main() -> int:
    args = parse_args()
    # A SIGTERM unwinds like Ctrl-C: every prober stopped, the namespace gone, the temporary files removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started where SIGINT is ignored (`cmd &`)
    meta = {"load_start": load_average()}
    runs: list[Run] = []
    try:
        smokeping, meta["smokeping_version"] = smokeping_binary(args)
        meta["smokeping_from"] = smokeping if args.smokeping else "Debian trixie's package"
        with tempfile.TemporaryDirectory(prefix="bench-probe-") as tmp:
            workdir = Path(tmp)
            for n in args.targets:
                addresses = [address(1, i) for i in range(n)]
                window = max(60.0, args.warmup + args.window + 10)
                probers = (OURS, THEIRS) if n <= args.smokeping_max else (OURS,)
                for prober in probers:
                    launch = launch_for(prober, addresses, workdir, smokeping, window)
                    runs.append(measured(launch, addresses, args, workdir))
                    time.sleep(2)  # let the last prober's sockets and threads go before the next one
            try:
                delays = delay_test(args, workdir, smokeping, meta)
            except BenchFailure as failure:  # the namespace or the responder: report the loopback runs anyway
                progress(f"delay test: FAILED: {failure}")
                delays = [DelayResult(OURS, failure=str(failure))]
    except BenchFailure as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: probers and responder stopped, namespace gone, temporary files removed", file=sys.stderr)
        return 130
    report(args, runs, delays, meta)
    failed = [f"{r.targets} {r.prober}" for r in runs if r.failure] + [d.prober for d in delays if d.failure]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
