"""What the prober keeps per probed path: counters and histograms for /metrics, raw samples for /paths.json."""

from __future__ import annotations

import hashlib
import math
import statistics
from array import array
from bisect import bisect_left, insort
from dataclasses import dataclass

ICMP, TCP, MTR = "icmp", "tcp", "mtr"
KINDS = (ICMP, TCP, MTR)

# Sample codes kept in the rings. Outcome names index by code - 1.
PENDING, OK, TIMEOUT, REFUSED, UNREACHABLE, ERROR = range(6)
OUTCOMES = ("ok", "timeout", "refused", "unreachable", "error")

# The RTT histogram per destination AZ (aggregatable across exporters, for AZ-pair quantiles): 10 us .. 10 s in the
# R10 series (10 steps a decade, each about 1.26x the last), so histogram_quantile is within about 12% anywhere,
# with bounds at 100 us and at the default health thresholds (0.1 s, 0.25 s). A path's own quantiles are exact.
R10 = (1.0, 1.25, 1.6, 2.0, 2.5, 3.15, 4.0, 5.0, 6.3, 8.0)
AZ_RTT_BUCKETS = (*(round(m * 10.0**e, 12) for e in range(-5, 1) for m in R10), 10.0)
LAG_BUCKETS = tuple(1e-4 * 2**i for i in range(17))
# The quantiles of the window every path exposes, exact (nearest rank; the median as statistics.median has it).
QUANTILES = (0.5, 0.9, 0.99)


@dataclass(frozen=True)
class Target:
    """One address of one destination host."""

    name: str
    address: str
    family: int
    region: str = ""
    az: str = ""
    source: str = "static"
    tcp_ports: tuple[int, ...] = ()


@dataclass(frozen=True)
class Hop:
    hop: int
    address: str
    sent: int
    received: int
    loss_ratio: float
    rtt_seconds: float | None


@dataclass(frozen=True)
class MtrResult:
    hops: tuple[Hop, ...]
    reached: bool
    path_id: str
    finished_at: float  # unix time


class Hist:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class Ring:
    """The last `cap` samples: monotonic time, value (seconds) and code, addressed by an ever-growing position.

    `ok` holds the values of the OK samples taken within `window` seconds of the newest one, sorted, so a scrape
    reads a path's exact quantiles without sorting: the loop inserts each reply and removes each sample as it
    leaves the window (about a microsecond per probe at 300 samples)."""

    __slots__ = ("c", "cap", "ok", "pos", "start", "t", "v", "window")

    def __init__(self, cap: int, window: float):
        self.cap = cap
        self.window = window
        self.t = array("d", bytes(8 * cap))
        self.v = array("f", bytes(4 * cap))
        self.c = array("b", bytes(cap))
        self.pos = 0
        self.start = 0  # the oldest position inside the window
        self.ok: list[float] = []

    def push(self, t: float, v: float, code: int) -> int:
        pos = self.pos
        self._leave(t - self.window, pos - self.cap + 1)
        i = pos % self.cap
        self.t[i] = t
        self.v[i] = v
        self.c[i] = code
        self.pos = pos + 1
        return pos

    def _leave(self, t0: float, keep_from: int) -> None:
        """Move the window's start past the samples older than t0 and the positions before keep_from."""
        start, pos, cap = self.start, self.pos, self.cap
        while start < pos and (start < keep_from or self.t[start % cap] < t0):
            i = start % cap
            if self.c[i] == OK:
                del self.ok[bisect_left(self.ok, self.v[i])]
            start += 1
        self.start = start

    def set(self, pos: int, v: float, code: int) -> None:
        if pos >= self.pos - self.cap:
            i = pos % self.cap
            self.v[i] = v
            self.c[i] = code
            if code == OK and pos >= self.start:
                insort(self.ok, self.v[i])  # as stored (float32), so that leaving finds it

    def resized(self, cap: int, window: float) -> Ring:
        new = Ring(cap, window)
        first = max(0, self.pos - min(cap, self.cap))
        for pos in range(first, self.pos):
            i, j = pos % self.cap, pos % cap
            new.t[j], new.v[j], new.c[j] = self.t[i], self.v[i], self.c[i]
        new.pos, new.start = self.pos, first
        new.ok = sorted(new.v[pos % cap] for pos in range(first, self.pos) if new.c[pos % cap] == OK)
        if self.pos:
            new._leave(new.t[(self.pos - 1) % cap] - window, 0)
        return new

    def quantiles(self) -> tuple[float, ...] | None:
        """QUANTILES of the window's OK samples, or None without any; callable from another thread."""
        return quantiles(self.ok.copy())

    def since(self, t0: float) -> list[tuple[float, int]]:
        """(value, code) of the samples taken at or after t0, oldest first."""
        out = []
        for pos in range(max(0, self.pos - self.cap), self.pos):
            i = pos % self.cap
            if self.t[i] >= t0:
                out.append((self.v[i], self.c[i]))
        return out


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def target_label(target: Target, port: int) -> str:
    if not port:
        return target.address
    return f"[{target.address}]:{port}" if target.family == 6 else f"{target.address}:{port}"


def source_labels(region: str, az: str) -> str:
    return f'src_region="{escape(region)}",src_az="{escape(az)}"'


def series_labels(source_labels: str, target: Target, port: int, kind: str) -> str:
    """The label set of a path, pre-rendered once for the exposition."""
    return (
        f'{source_labels},dst_region="{escape(target.region)}",dst_az="{escape(target.az)}",'
        f'dst_host="{escape(target.name)}",target="{escape(target_label(target, port))}",probe="{kind}"'
    )


class Series:
    """One probed path (a target address with one probe kind, and a port for TCP); also its scheduling state."""

    __slots__ = ("active", "busy", "k", "key", "kind", "labels", "phase", "port", "slot", "sockaddr", "target")

    def __init__(self, kind: str, target: Target, port: int, labels: str):
        self.kind = kind
        self.target = target
        self.port = port
        self.labels = labels
        self.key = (kind, labels)
        self.sockaddr = (target.address, port)
        self.active = True
        self.busy = False
        self.slot = 0  # position in the golden-ratio sequence of its kind
        self.phase = 0  # offset of its start times within the interval, ns
        self.k = 0  # index of its next slot


class IcmpSeries(Series):
    """Counters move when a probe's outcome is known, received and lost together with it: the increase of
    received_total over any window is never more than that of sent_total (= received + lost)."""

    __slots__ = ("az_rtt", "corrupt", "lost", "received", "ring")

    def __init__(self, target: Target, labels: str, ring: Ring, az_rtt: Hist):
        super().__init__(ICMP, target, 0, labels)
        self.received = self.lost = self.corrupt = 0
        self.az_rtt = az_rtt  # shared by the paths into the target's AZ
        self.ring = ring

    @property
    def sent(self) -> int:
        """Probes with a known outcome; one in flight is counted when it is answered or lost."""
        return self.received + self.lost

    def counts(self) -> tuple[int, int]:
        """(sent, received) from one read of each counter, for another thread: sent never trails received."""
        received, lost = self.received, self.lost
        return received + lost, received

    def answered(self, ring_pos: int, rtt: float) -> None:
        self.received += 1
        self.az_rtt.observe(rtt)
        self.ring.set(ring_pos, rtt, OK)

    def timed_out(self, ring_pos: int) -> None:
        self.lost += 1
        self.ring.set(ring_pos, 0.0, TIMEOUT)

    def summary(self, now: float, window: float) -> dict:
        rtts, lost, in_flight = [], 0, 0
        for v, code in self.ring.since(now - window):
            if code == OK:
                rtts.append(v)
            elif code == PENDING:
                in_flight += 1
            else:
                lost += 1
        sent = len(rtts) + lost
        return {
            "sent": sent,
            "received": len(rtts),
            "lost": lost,
            "in_flight": in_flight,
            "corrupt_total": self.corrupt,
            "loss_ratio": lost / sent if sent else None,
            **percentiles(rtts, "rtt"),
        }


class TcpSeries(Series):
    """Counted by outcome when the attempt ends: sent is their sum, received the ok ones."""

    __slots__ = ("outcomes", "ring")

    def __init__(self, target: Target, port: int, labels: str, ring: Ring):
        super().__init__(TCP, target, port, labels)
        self.outcomes = [0] * len(OUTCOMES)
        self.ring = ring

    def counts(self) -> tuple[int, int]:
        """(sent, received) from one copy of the outcome counters (a copy is atomic for other threads)."""
        outcomes = self.outcomes.copy()
        return sum(outcomes), outcomes[0]

    def summary(self, now: float, window: float) -> dict:
        times, outcomes, in_flight = [], dict.fromkeys(OUTCOMES, 0), 0
        for v, code in self.ring.since(now - window):
            if code == PENDING:
                in_flight += 1
                continue
            outcomes[OUTCOMES[code - 1]] += 1
            if code == OK:
                times.append(v)
        attempts = sum(outcomes.values())
        return {
            "port": self.port,
            "attempts": attempts,
            "in_flight": in_flight,
            "outcomes": outcomes,
            "failure_ratio": (attempts - outcomes["ok"]) / attempts if attempts else None,
            **percentiles(times, "connect"),
        }


class MtrSeries(Series):
    __slots__ = ("path_changes", "result", "trace", "traces")

    def __init__(self, target: Target, labels: str):
        super().__init__(MTR, target, 0, labels)
        self.path_changes = 0
        self.traces = 0
        self.result: MtrResult | None = None
        self.trace: Trace | None = None

    def summary(self) -> dict | None:
        r = self.result
        if r is None:
            return None
        return {
            "path_id": r.path_id,
            "reached": r.reached,
            "path_changes_total": self.path_changes,
            "finished_at": r.finished_at,
            "hops": [h.__dict__ for h in r.hops],
        }


class Trace:
    """One MTR run: `count` rounds of TTL-limited echo requests; per TTL the packets sent and the replies seen."""

    __slots__ = ("dest_hop", "hops", "max_hops", "outstanding", "round", "stop_hop")

    def __init__(self, max_hops: int):
        self.max_hops = max_hops
        self.round = 0
        self.outstanding = 0  # packets neither answered nor timed out
        self.dest_hop = 0  # lowest TTL the destination itself answered
        self.stop_hop = 0  # lowest TTL that answered "unreachable"
        self.hops: dict[int, list] = {}  # ttl -> [sent, received, rtts, {address: replies}]

    def limit(self) -> int:
        """Later rounds stop at the hop where the path ended in an earlier round."""
        return self.dest_hop or self.stop_hop or self.max_hops

    def sent(self, ttl: int) -> None:
        hop = self.hops.get(ttl)
        if hop is None:
            hop = self.hops[ttl] = [0, 0, [], {}]
        hop[0] += 1

    def record(self, ttl: int, address: str, rtt: float, reached: bool, unreachable: bool) -> None:
        self.outstanding -= 1
        hop = self.hops[ttl]
        hop[1] += 1
        hop[2].append(rtt)
        hop[3][address] = hop[3].get(address, 0) + 1
        if reached and (not self.dest_hop or ttl < self.dest_hop):
            self.dest_hop = ttl
        if unreachable and (not self.stop_hop or ttl < self.stop_hop):
            self.stop_hop = ttl

    def result(self, finished_at: float) -> MtrResult:
        answered = [ttl for ttl, h in self.hops.items() if h[1]]
        last = self.dest_hop or self.stop_hop or max(answered, default=0)
        hops = []
        for ttl in range(1, last + 1):
            sent, received, rtts, addresses = self.hops.get(ttl, [0, 0, [], {}])
            address = max(addresses, key=addresses.get) if addresses else "*"
            hops.append(
                Hop(
                    hop=ttl,
                    address=address,
                    sent=sent,
                    received=received,
                    loss_ratio=1 - received / sent if sent else 1.0,
                    rtt_seconds=statistics.median(rtts) if rtts else None,
                )
            )
        path = "|".join(h.address for h in hops) + ("" if self.dest_hop else "|-")
        return MtrResult(tuple(hops), bool(self.dest_hop), hashlib.sha1(path.encode()).hexdigest()[:12], finished_at)


def quantiles(ordered: list[float]) -> tuple[float, ...] | None:
    """QUANTILES of sorted values, or None without any: the median as statistics.median has it (the mean of the
    middle two for an even count), the others by nearest rank."""
    n = len(ordered)
    if not n:
        return None
    half = n // 2
    median = ordered[half] if n % 2 else (ordered[half - 1] + ordered[half]) / 2
    return (median, *(ordered[math.ceil(q * n) - 1] for q in QUANTILES[1:]))


def percentiles(values: list[float], prefix: str) -> dict:
    """Exact median, p90 and p99 of the samples, not interpolated from buckets."""
    found = quantiles(sorted(values))
    names = (f"{prefix}_median_seconds", f"{prefix}_p90_seconds", f"{prefix}_p99_seconds")
    # Samples are stored as float32: round to the nanosecond so the JSON shows no conversion noise.
    return dict(zip(names, (round(v, 9) for v in found) if found else (None,) * 3, strict=True))
