"""The prober: one thread, one epoll loop, one ICMP socket per family, a heap of due probes.

ICMP replies carry the kernel's receive stamp, so reading one later does not change its RTT: the loop reads them
whenever it wakes anyway (to send, or at the oldest probe's deadline) instead of waking for each (half the wake-ups).
While an MTR trace runs, replies wake the loop too, since each round follows the previous one's answers.

Every path is probed once per interval. Start times are spread over the interval with a golden-ratio sequence
(evenly, whatever the number of paths, and stable when paths come and go) and jittered by up to one slot so the
load stays flat and unsynchronised with other probers. Nothing here allocates a thread or a coroutine per probe.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import heapq
import logging
import math
import os
import random
import select
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass

from . import icmp as icmp_mod
from .config import Config
from .series import (
    AZ_RTT_BUCKETS,
    ERROR,
    ICMP,
    KINDS,
    LAG_BUCKETS,
    MTR,
    OK,
    PENDING,
    REFUSED,
    TCP,
    TIMEOUT,
    UNREACHABLE,
    Hist,
    IcmpSeries,
    MtrSeries,
    Ring,
    Series,
    Target,
    TcpSeries,
    Trace,
    series_labels,
    source_labels,
)

log = logging.getLogger("infra_obs_probe")

GOLDEN = (math.sqrt(5) - 1) / 2
# A kernel receive stamp may trail our own clock reading only by reading noise; more means the realtime clock moved.
CLOCK_SLACK_NS = 1_000_000
MTR_ROUND_SPACING_NS = 200_000_000
# The loop wakes this much before the next due probe: select's own lateness.
EARLY_NS = 100_000
# A wake-up costs about 50 us of CPU on a virtual machine, more than a probe itself, so each one also sends the probes
# due soon after: up to BATCH_PROBES at the configured rate (a few packets back to back, never a burst), never more
# than BATCH_MAX_NS nor a tenth of the probe interval early (each path keeps its interval on average: due times do
# not drift, and a probe never goes out close to its predecessor on the same path).
BATCH_PROBES = 8
BATCH_MAX_NS = 50_000_000
LINGER_RESET = struct.pack("ii", 1, 0)
SKIP_REASONS = ("in_flight", "behind")
UNMATCHED_REASONS = ("late", "unknown_sequence", "wrong_address", "foreign_identifier")
TCP_ERRNO_OUTCOME = {
    0: OK,
    errno.ECONNREFUSED: REFUSED,
    errno.ETIMEDOUT: TIMEOUT,
    errno.EHOSTUNREACH: UNREACHABLE,
    errno.ENETUNREACH: UNREACHABLE,
}


@dataclass(frozen=True)
class Snapshot:
    """What readers (HTTP threads) see; replaced as a whole when the set of paths changes."""

    icmp: tuple[IcmpSeries, ...] = ()
    tcp: tuple[TcpSeries, ...] = ()
    mtr: tuple[MtrSeries, ...] = ()
    targets: tuple[tuple[str, int], ...] = ()  # (source, number of target addresses)


class _Family:
    """An ICMP socket with its in-flight probes keyed by sequence number, and their deadlines in send order."""

    __slots__ = ("on_error", "on_reply", "pending", "seq", "sock", "timeouts")

    def __init__(self, sock: icmp_mod.IcmpSocket):
        self.sock = sock
        self.seq = random.randrange(0x10000)
        self.pending: dict[int, tuple] = {}
        self.timeouts: deque[tuple[int, int, int]] = deque()
        self.on_reply: icmp_mod.ReplyCallback | None = None
        self.on_error: icmp_mod.ErrorCallback | None = None


class Prober:
    def __init__(self, config: Config):
        self.config = config
        self.snapshot = Snapshot()
        self.token = os.urandom(8)  # marks our payloads: replies to another process or an earlier run do not match
        self.lag = Hist(LAG_BUCKETS)
        # RTTs by destination (region, AZ), kept while the exporter runs: counters never restart with a path
        self.az_rtt: dict[tuple[str, str], Hist] = {}
        self.skipped = {(k, r): 0 for k in KINDS for r in SKIP_REASONS}
        self.unmatched = dict.fromkeys(UNMATCHED_REASONS, 0)
        self.send_errors = dict.fromkeys(KINDS, 0)
        self.clock_fallbacks = 0
        self.loop_errors = 0
        self.failure = ""  # the loop's last unexpected error, until a configuration is applied again
        self.socket_modes: dict[int, str] = {}
        self._lock = threading.Lock()
        self._update: tuple[Config, dict[str, list[Target]]] | None = None
        self._targets: dict[str, list[Target]] = {"static": [], "consul": []}
        self._series: dict[tuple, Series] = {}
        self._families: dict[int, _Family | None] = {}
        self._family_errors: dict[int, str] = {}
        self._heap: list[tuple] = []
        self._tiebreak = 0
        self._slots = dict.fromkeys(KINDS, 0)
        self._rotation = random.random()
        self._epoch = time.monotonic_ns()
        self._next_pid = int.from_bytes(os.urandom(4), "big") << 24
        self._tcp: dict[int, tuple] = {}
        self._tcp_timeouts: deque[tuple[int, int, socket.socket]] = deque()
        self._epoll = select.epoll()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wake, select.EPOLLIN)
        self._icmp_epoll = select.epoll()  # the ICMP sockets: watched only while a trace runs (see the docstring)
        self._handlers: dict[int, _Family] = {}
        self._tracing: set[MtrSeries] = set()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._apply(config, self._targets)

    # ---- control, from other threads -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="prober", daemon=True)
        self._thread.start()

    def health(self) -> str:
        """Why the prober cannot be trusted now, or "" when it can."""
        if self._thread is None or not self._thread.is_alive():
            return "probe loop stopped"
        return self.failure

    def stop(self) -> None:
        self._stopping = True
        os.eventfd_write(self._wake, 1)
        if self._thread:
            self._thread.join(5)
        for fam in self._families.values():
            if fam:
                fam.sock.close()
        for _s, sock, *_ in self._tcp.values():
            sock.close()
        self._epoll.close()
        self._icmp_epoll.close()
        os.close(self._wake)

    def update(self, config: Config | None = None, source: str | None = None, targets: list[Target] | None = None):
        """Hand the loop a new configuration and/or a source's new target list; it applies them between probes."""
        with self._lock:
            cfg, all_targets = self._update or (self.config, dict(self._targets))
            if config is not None:
                cfg = config
            if source is not None:
                all_targets = {**all_targets, source: list(targets or [])}
            self._update = (cfg, all_targets)
        os.eventfd_write(self._wake, 1)

    def families(self) -> list[_Family | None]:
        return list(self._families.values())

    # ---- reconciliation ----------------------------------------------------------------------------------------

    def _apply(self, cfg: Config, targets: dict[str, list[Target]]) -> None:
        old = self.config
        rescheduled = (cfg.interval, cfg.mtr.interval) != (old.interval, old.mtr.interval)
        self.config = cfg
        self._targets = targets
        self._timeout_ns = int(cfg.timeout * 1e9)
        probe_ns = int(cfg.interval * 1e9)
        self._interval_ns = {ICMP: probe_ns, TCP: probe_ns, MTR: int(cfg.mtr.interval * 1e9)}
        self._ring_shape = (math.ceil(cfg.window / cfg.interval * 1.05) + 8, cfg.window)
        self._payload_tail = bytes(i & 0xFF for i in range(cfg.icmp.payload_size))[16:]

        wanted, counts = self._wanted(cfg, targets)
        for key, s in self._series.items():
            if key not in wanted:
                s.active = False
                if isinstance(s, MtrSeries):
                    s.trace = None
                    self._tracing.discard(s)
        families = {s.target.family for s in wanted.values() if s.kind in (ICMP, MTR)}
        self._open_families(families, cfg.icmp.socket, reopen=cfg.icmp.socket != old.icmp.socket)
        added = [s for key, s in wanted.items() if key not in self._series]
        for s in added:
            s.slot = self._slots[s.kind]
            self._slots[s.kind] += 1
        if rescheduled:
            self._epoch = time.monotonic_ns()
            self._heap = []
            for s in wanted.values():
                if isinstance(s, MtrSeries):
                    s.trace = None
                    s.busy = False
            self._tracing.clear()
        self._series = wanted
        n = {k: sum(1 for s in wanted.values() if s.kind == k) for k in KINDS}
        self._jitter_ns = {k: min(self._interval_ns[k] // 10, self._interval_ns[k] // max(n[k], 1)) for k in KINDS}
        rate = sum(n[k] * 1e9 / self._interval_ns[k] for k in KINDS)  # probes (and traces) per second
        self._batch_ns = min(BATCH_MAX_NS, probe_ns // 10, int(BATCH_PROBES / rate * 1e9)) if rate else EARLY_NS
        now = time.monotonic_ns()
        for s in wanted.values() if rescheduled else added:
            iv = self._interval_ns[s.kind]
            s.phase = int(((self._rotation + s.slot * GOLDEN) % 1.0) * iv)
            s.k = max(0, -((self._epoch + s.phase - now) // iv))
            self._push(s, self._due(s))
        self.snapshot = Snapshot(
            icmp=tuple(s for s in wanted.values() if isinstance(s, IcmpSeries)),
            tcp=tuple(s for s in wanted.values() if isinstance(s, TcpSeries)),
            mtr=tuple(s for s in wanted.values() if isinstance(s, MtrSeries)),
            targets=tuple(counts.items()),
        )
        # The series are long-lived: keep the cyclic GC from walking them (full collections stalled probes by ms).
        gc.collect()
        gc.freeze()

    def _wanted(self, cfg: Config, targets: dict[str, list[Target]]) -> tuple[dict[tuple, Series], dict[str, int]]:
        """Every path the configuration and targets ask for, reusing the existing series (and their counters)."""
        source = source_labels(cfg.source.region, cfg.source.az)
        shape = self._ring_shape
        wanted: dict[tuple, Series] = {}
        counts = {}
        for origin in ("static", "consul"):
            counts[origin] = len({(t.name, t.address) for t in targets.get(origin, [])})
            for t in targets.get(origin, []):
                paths = []
                if cfg.icmp.enabled:
                    paths.append((ICMP, 0))
                if cfg.tcp.enabled:
                    paths.extend((TCP, port) for port in t.tcp_ports)
                if cfg.mtr.enabled:
                    paths.append((MTR, 0))
                for kind, port in paths:
                    key = (kind, series_labels(source, t, port, kind))
                    if key in wanted:
                        continue
                    s = self._series.get(key)
                    if s is None:
                        if kind == ICMP:
                            az_rtt = self.az_rtt.setdefault((t.region, t.az), Hist(AZ_RTT_BUCKETS))
                            s = IcmpSeries(t, key[1], Ring(*shape), az_rtt)
                        elif kind == TCP:
                            s = TcpSeries(t, port, key[1], Ring(*shape))
                        else:
                            s = MtrSeries(t, key[1])
                    elif isinstance(s, IcmpSeries | TcpSeries) and (s.ring.cap, s.ring.window) != shape:
                        s.ring = s.ring.resized(*shape)
                    wanted[key] = s
        return wanted, counts

    def _open_families(self, families: set[int], mode: str, reopen: bool) -> None:
        for family in (4, 6):
            fam = self._families.get(family)
            if fam is not None and (reopen or family not in families):
                self._icmp_epoll.unregister(fam.sock.fileno())
                self._handlers.pop(fam.sock.fileno(), None)
                fam.sock.close()
                # the socket counts foreign replies itself (hot path); keep its count past its life
                self.unmatched["foreign_identifier"] += fam.sock.foreign
                for entry in fam.pending.values():  # their replies can no longer arrive
                    if entry[5] is None:
                        entry[1].timed_out(entry[4])
                self._families[family] = fam = None
            if fam is None and family in families:
                try:
                    sock = icmp_mod.IcmpSocket(family, mode)
                except OSError as e:
                    if self._family_errors.get(family) != str(e):
                        log.error("ICMPv%d probes cannot be sent: %s", family, e)
                    self._family_errors[family] = str(e)
                    self._families[family] = None
                    continue
                self._family_errors.pop(family, None)
                fam = self._families[family] = _Family(sock)
                fam.on_reply = self._on_reply_for(fam)
                fam.on_error = self._on_error_for(fam)
                self.socket_modes[family] = sock.mode
                self._handlers[sock.fileno()] = fam
                self._icmp_epoll.register(sock.fileno(), select.EPOLLIN | select.EPOLLERR)
                log.info("ICMPv%d socket: %s, receive buffer %d bytes", family, sock.mode, sock.receive_buffer)
            if family not in families:
                self.socket_modes.pop(family, None)

    # ---- scheduling --------------------------------------------------------------------------------------------

    def _due(self, s: Series) -> int:
        jitter = self._jitter_ns[s.kind]
        return self._epoch + s.phase + s.k * self._interval_ns[s.kind] + int((random.random() - 0.5) * jitter)

    def _push(self, s: Series, due: int, trace: Trace | None = None) -> None:
        self._tiebreak += 1
        heapq.heappush(self._heap, (due, self._tiebreak, s, trace))

    def _loop(self) -> None:
        poll = self._epoll.poll
        icmp_poll = self._icmp_epoll.poll
        prompt = [self._epoll.fileno()]
        prompt_and_icmp = [*prompt, self._icmp_epoll.fileno()]
        handlers = self._handlers
        tcp = self._tcp
        while not self._stopping:
            try:
                wait = self._wait_seconds()
                if wait > 0:  # select sleeps with microsecond precision, epoll only in whole milliseconds
                    select.select(prompt_and_icmp if self._tracing else prompt, [], [], wait)
                for fd, mask in icmp_poll(0, 8):
                    fam = handlers[fd]
                    if mask & select.EPOLLERR:
                        fam.sock.drain_errors(fam.on_error)
                    fam.sock.drain(fam.on_reply, fam.on_error)
                for fd, _mask in poll(0, 512):
                    if fd == self._wake:
                        self._take_update()
                    elif fd in tcp:
                        self._tcp_event(fd)
                self._run_due()
                self._expire()
            except Exception as e:
                self.loop_errors += 1
                self.failure = f"probe loop error: {type(e).__name__}: {e}"[:500]
                log.exception("prober loop error")

    def _wait_seconds(self) -> float:
        now = time.monotonic_ns()
        nxt = now + 1_000_000_000
        if self._heap:
            nxt = min(nxt, self._heap[0][0] - EARLY_NS)
        # Timeout entries of answered probes stay queued (a reply only removes the pending entry); drop them from
        # the head first, or the loop would wake once more per probe for nothing.
        for fam in self._families.values():
            if fam is None:
                continue
            timeouts, pending = fam.timeouts, fam.pending
            while timeouts:
                entry = pending.get(timeouts[0][1])
                if entry is not None and entry[0] == timeouts[0][2]:
                    nxt = min(nxt, timeouts[0][0])
                    break
                timeouts.popleft()
        timeouts = self._tcp_timeouts
        while timeouts:
            entry = self._tcp.get(timeouts[0][1])
            if entry is not None and entry[1] is timeouts[0][2]:
                nxt = min(nxt, timeouts[0][0])
                break
            timeouts.popleft()
        return max(0.0, (nxt - now) / 1e9)

    def _take_update(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._wake)
        with self._lock:
            update, self._update = self._update, None
        if update is not None:
            self._apply(*update)
            self.failure = ""

    def _run_due(self) -> None:
        heap = self._heap
        heappop = heapq.heappop
        now = time.monotonic_ns()
        lag = self.lag
        batch_until = now + max(self._batch_ns, EARLY_NS)
        while heap and heap[0][0] <= batch_until:
            if heap[0][3] is not None and heap[0][0] > now + EARLY_NS:
                break  # a trace's next round or deadline: on time, not with the batch
            due, _, s, trace = heappop(heap)
            if not s.active:
                continue
            if trace is not None:
                if trace is s.trace:
                    self._mtr_step(s, trace)
                continue
            kind = s.kind
            iv = self._interval_ns[kind]
            late = now - due
            if late >= iv:  # the loop fell a whole interval behind: skip the missed slots, do not burst to catch up
                k = -((self._epoch + s.phase - now) // iv)
                self.skipped[kind, "behind"] += k - s.k
                s.k = k
                self._push(s, self._due(s))
                continue
            lag.observe(late / 1e9 if late > 0 else 0.0)
            s.k += 1
            self._push(s, self._due(s))
            if kind == ICMP:
                self._send_icmp(s)
            elif s.busy:
                self.skipped[kind, "in_flight"] += 1
            elif kind == TCP:
                self._start_tcp(s)
            else:
                self._start_trace(s)

    # ---- ICMP ------------------------------------------------------------------------------------------------

    def _send_icmp(self, s: Series, ttl: int = 0, trace: Trace | None = None) -> None:
        fam = self._families.get(s.target.family)
        ring_pos = -1
        if trace is None:
            ring_pos = s.ring.push(time.monotonic(), 0.0, PENDING)
        if fam is None:
            self.send_errors[s.kind] += 1
            if trace is None:
                s.timed_out(ring_pos)
            return
        seq = fam.seq
        fam.seq = (seq + 1) & 0xFFFF
        pid = self._next_pid
        self._next_pid = pid + 1
        payload = self.token + pid.to_bytes(8, "big") + self._payload_tail
        packet = fam.sock.packet(seq, payload)
        pending = fam.pending
        old = pending.pop(seq, None)
        if old is not None and old[5] is None:  # sequence space wrapped before the old probe timed out
            old[1].timed_out(old[4])
        send_real = time.time_ns()
        send_mono = time.monotonic_ns()
        try:
            fam.sock.send(packet, s.target.address, ttl)
        except OSError:
            self.send_errors[s.kind] += 1
            if trace is None:
                s.timed_out(ring_pos)
            return
        pending[seq] = (pid, s, send_mono, send_real, ring_pos, trace, ttl, payload)
        if trace is not None:
            trace.outstanding += 1
        fam.timeouts.append((send_mono + self._timeout_ns, seq, pid))

    def _on_reply_for(self, fam: _Family):
        pending = fam.pending
        unmatched = self.unmatched

        def on_reply(source: str, seq: int, payload: bytes, kernel_ns: int, now: int) -> None:
            entry = pending.get(seq)
            if entry is None:
                unmatched["unknown_sequence"] += 1
                return
            _pid, s, send_mono, send_real, ring_pos, trace, ttl, sent_payload = entry
            if source != s.target.address:
                unmatched["wrong_address"] += 1
                return
            if payload != sent_payload:  # stays pending: a corrupt reply is not a reply, the probe may time out
                if trace is None:
                    s.corrupt += 1
                return
            del pending[seq]
            rtt = self._rtt(kernel_ns, send_real, now, send_mono)
            if trace is None:
                if rtt > self.config.timeout:  # stamped after its deadline: lost, whenever we came to read it
                    unmatched["late"] += 1
                    s.timed_out(ring_pos)
                else:
                    s.answered(ring_pos, rtt)
            elif trace is s.trace:
                trace.record(ttl, source, rtt, reached=True, unreachable=False)
                self._trace_answered(s, trace)

        return on_reply

    def _on_error_for(self, fam: _Family):
        pending = fam.pending

        def on_error(err: icmp_mod.IcmpError) -> None:
            entry = pending.get(err.seq)
            # Errors for plain echo probes are left to time out: the probe is lost either way.
            if entry is None or entry[5] is None or entry[1].target.address != err.destination:
                return
            del pending[err.seq]
            _pid, s, send_mono, send_real, _pos, trace, ttl, _payload = entry
            if trace is s.trace:
                rtt = self._rtt(err.kernel_ns, send_real, err.now, send_mono)
                trace.record(ttl, err.offender, rtt, reached=False, unreachable=err.kind == icmp_mod.UNREACHABLE)
                self._trace_answered(s, trace)

        return on_error

    def _rtt(self, kernel_ns: int, send_real: int, now: int, send_mono: int) -> float:
        mono = now - send_mono
        rtt = kernel_ns - send_real
        if rtt < 0 or rtt > mono + CLOCK_SLACK_NS:  # no stamp, or the realtime clock was stepped meanwhile
            if kernel_ns:
                self.clock_fallbacks += 1
            rtt = mono
        return rtt / 1e9

    def _expire(self) -> None:
        """Judge the probes whose deadline has passed. `now` is read first and the sockets are read after it, so
        every reply the kernel stamped before the deadline has been matched, however long the loop was held up
        (descheduled, stopped, or sending a long batch) between receiving it and getting here."""
        now = time.monotonic_ns()
        for fam in self._families.values():
            if fam is None:
                continue
            timeouts, pending = fam.timeouts, fam.pending
            if timeouts and timeouts[0][0] <= now:
                fam.sock.drain_errors(fam.on_error)
                fam.sock.drain(fam.on_reply, fam.on_error)
            while timeouts and timeouts[0][0] <= now:
                _, seq, pid = timeouts.popleft()
                entry = pending.get(seq)
                if entry is not None and entry[0] == pid:
                    del pending[seq]
                    if entry[5] is None:
                        entry[1].timed_out(entry[4])
        timeouts = self._tcp_timeouts
        if timeouts and timeouts[0][0] <= now:
            for fd, _mask in self._epoll.poll(0, 512):
                if fd in self._tcp:
                    self._tcp_event(fd)
        while timeouts and timeouts[0][0] <= now:
            _, fd, sock = timeouts.popleft()
            entry = self._tcp.get(fd)
            if entry is not None and entry[1] is sock:
                self._tcp_finish(fd, errno.ETIMEDOUT)

    # ---- TCP -------------------------------------------------------------------------------------------------

    def _start_tcp(self, s: TcpSeries) -> None:
        ring_pos = s.ring.push(time.monotonic(), 0.0, PENDING)
        try:
            sock = socket.socket(socket.AF_INET if s.target.family == 4 else socket.AF_INET6, socket.SOCK_STREAM)
        except OSError:
            self.send_errors[TCP] += 1
            self._tcp_record(s, ring_pos, ERROR, 0)
            return
        sock.setblocking(False)
        # Reset instead of FIN: no TIME_WAIT left behind, so thousands of probes a second cannot run out of ports.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        start = time.monotonic_ns()
        err = sock.connect_ex(s.sockaddr)
        if err == errno.EINPROGRESS:
            fd = sock.fileno()
            s.busy = True
            self._tcp[fd] = (s, sock, start, ring_pos)
            self._epoll.register(fd, select.EPOLLOUT)
            self._tcp_timeouts.append((start + self._timeout_ns, fd, sock))
            return
        sock.close()
        self._tcp_record(s, ring_pos, TCP_ERRNO_OUTCOME.get(err, ERROR), time.monotonic_ns() - start)

    def _tcp_event(self, fd: int) -> None:
        sock = self._tcp[fd][1]
        self._tcp_finish(fd, sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))

    def _tcp_finish(self, fd: int, err: int) -> None:
        s, sock, start, ring_pos = self._tcp.pop(fd)
        elapsed = time.monotonic_ns() - start
        self._epoll.unregister(fd)
        sock.close()
        s.busy = False
        self._tcp_record(s, ring_pos, TCP_ERRNO_OUTCOME.get(err, ERROR), elapsed)

    @staticmethod
    def _tcp_record(s: TcpSeries, ring_pos: int, outcome: int, elapsed_ns: int) -> None:
        s.outcomes[outcome - 1] += 1
        if outcome == OK:
            s.ring.set(ring_pos, elapsed_ns / 1e9, OK)
        else:
            s.ring.set(ring_pos, 0.0, outcome)

    # ---- MTR -------------------------------------------------------------------------------------------------

    def _trace_answered(self, s: MtrSeries, trace: Trace) -> None:
        """Finish a trace as soon as its last round is fully answered instead of waiting for the timeout."""
        if trace.round == self.config.mtr.count and not trace.outstanding:
            self._push(s, 0, trace)

    def _start_trace(self, s: MtrSeries) -> None:
        s.busy = True
        s.trace = Trace(self.config.mtr.max_hops)
        self._tracing.add(s)
        self._mtr_step(s, s.trace)

    def _mtr_step(self, s: MtrSeries, trace: Trace) -> None:
        """Send the next round (TTL 1 up to where the path ended so far), or finish after the last one."""
        now = time.monotonic_ns()
        if trace.round < self.config.mtr.count:
            for ttl in range(1, trace.limit() + 1):
                trace.sent(ttl)
                self._send_icmp(s, ttl, trace)
            trace.round += 1
            last = trace.round == self.config.mtr.count
            self._push(s, now + (self._timeout_ns if last else MTR_ROUND_SPACING_NS), trace)
            return
        result = trace.result(time.time())
        if s.result is not None and s.result.path_id != result.path_id:
            s.path_changes += 1
            log.info("path to %s changed: %s -> %s", s.target.address, s.result.path_id, result.path_id)
        s.result = result
        s.traces += 1
        s.trace = None
        s.busy = False
        self._tracing.discard(s)
