"""One ICMP socket per address family: unprivileged datagram sockets when the kernel allows them, raw otherwise.

Receive times come from the kernel (SO_TIMESTAMPNS, CLOCK_REALTIME) so userspace scheduling does not inflate RTTs.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Callable
from typing import NamedTuple

# Linux constants the socket module does not export.
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
SOL_RAW = 255
ICMP_FILTER = 1
ICMP6_FILTER = 1
IP_RECVERR = 11
IPV6_RECVERR = 25
IPV6_HOPLIMIT = 52
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3
RECV_BUFFER = 8 << 20

TIMESPEC = struct.Struct("=qq")
HEADER = struct.Struct("!BBHHH")
ID_SEQ = struct.Struct("!HH")
TTL = struct.Struct("i")
EXTENDED_ERR = struct.Struct("=IBBBB")

# Error kinds handed to the error callback.
TIME_EXCEEDED = 1
UNREACHABLE = 2


class IcmpError(NamedTuple):
    """A time-exceeded or unreachable message about one of our echo requests."""

    offender: str  # who sent the error: the hop
    destination: str  # where our request was going
    seq: int
    kind: int  # TIME_EXCEEDED or UNREACHABLE
    kernel_ns: int  # receive time, CLOCK_REALTIME
    now: int  # our CLOCK_MONOTONIC reading after the read


# on_reply(source, sequence, payload, kernel_ns, monotonic_ns): the hot path, so plain arguments.
ReplyCallback = Callable[[str, int, bytes, int, int], None]
ErrorCallback = Callable[[IcmpError], None]


class IcmpUnavailable(OSError):
    pass


def checksum(data: bytes) -> int:
    """RFC 1071 checksum; summing native-order words and storing the result natively is byte-order neutral."""
    if len(data) & 1:
        data += b"\0"
    total = sum(memoryview(data).cast("H"))
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class IcmpSocket:
    def __init__(self, family: int, mode: str = "auto"):
        self.family = family
        af = socket.AF_INET if family == 4 else socket.AF_INET6
        proto = socket.IPPROTO_ICMP if family == 4 else socket.IPPROTO_ICMPV6
        errors = []
        for kind in ("dgram", "raw") if mode == "auto" else (mode,):
            try:
                sock = socket.socket(af, socket.SOCK_DGRAM if kind == "dgram" else socket.SOCK_RAW, proto)
                break
            except OSError as e:
                errors.append(f"{kind}: {e.strerror}")
        else:
            hint = "set net.ipv4.ping_group_range to include this group, or grant CAP_NET_RAW"
            raise IcmpUnavailable(f"no ICMPv{family} socket ({'; '.join(errors)}): {hint}")
        self.sock = sock
        self.mode = kind
        self.raw = kind == "raw"
        self.request_type = 8 if family == 4 else 128
        self.reply_type = 0 if family == 4 else 129
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECV_BUFFER)
        except OSError:  # without CAP_NET_ADMIN the kernel caps it at net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
        if self.raw:
            self.ident = random.randrange(1, 0x10000)
            self._install_filter()
        else:
            sock.bind(("0.0.0.0", 0) if family == 4 else ("::", 0))
            # The kernel replaces the identifier with the socket's "port" and filters replies by it.
            self.ident = sock.getsockname()[1]
            if family == 4:
                sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        self.receive_buffer = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.foreign = 0  # replies to other processes' pings (raw sockets see them all)
        if family == 4:
            self.ttl_cmsg = (socket.IPPROTO_IP, socket.IP_TTL)
            self.time_exceeded, self.unreachable = 11, 3
        else:
            self.ttl_cmsg = (socket.IPPROTO_IPV6, IPV6_HOPLIMIT)
            self.time_exceeded, self.unreachable = 3, 1

    def _install_filter(self) -> None:
        """Only echo replies and the errors MTR needs reach userspace: a raw socket otherwise sees every ICMP
        packet, including our own echo requests on loopback."""
        if self.family == 4:
            allowed = (0, 3, 11)
            self.sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("I", 0xFFFFFFFF & ~sum(1 << t for t in allowed)))
        else:
            words = [0xFFFFFFFF] * 8
            for t in (129, 1, 3):
                words[t >> 5] &= ~(1 << (t & 31))
            self.sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("8I", *words))

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def packet(self, seq: int, payload: bytes) -> bytes:
        data = HEADER.pack(self.request_type, 0, 0, self.ident, seq) + payload
        if self.raw and self.family == 4:  # the kernel computes ICMPv6 and datagram-socket checksums itself
            buf = bytearray(data)
            struct.pack_into("=H", buf, 2, checksum(data))
            return bytes(buf)
        return data

    def send(self, packet: bytes, address: str, ttl: int = 0) -> None:
        try:
            self._send(packet, address, ttl)
        except OSError:
            if self.raw:
                raise
            # A datagram socket reports an earlier ICMP error (e.g. MTR's time-exceeded) on the next send,
            # once: that send did not go out, so try again; a real error fails again.
            self._send(packet, address, ttl)

    def _send(self, packet: bytes, address: str, ttl: int) -> None:
        if ttl:
            self.sock.sendmsg([packet], [(*self.ttl_cmsg, TTL.pack(ttl))], 0, (address, 0))
        else:
            self.sock.sendto(packet, (address, 0))

    def drain(self, on_reply: ReplyCallback, on_error: ErrorCallback) -> int:
        """Read every queued packet; returns how many were read."""
        recvmsg = self.sock.recvmsg
        monotonic_ns = time.monotonic_ns
        raw4 = self.raw and self.family == 4
        raw = self.raw
        ident = self.ident
        reply_type = self.reply_type
        count = 0
        while True:
            try:
                data, anc, _flags, addr = recvmsg(4096, 64)
            except (BlockingIOError, InterruptedError):
                return count
            except OSError:  # a pending socket error; the next read continues with the queue
                continue
            now = monotonic_ns()
            count += 1
            kernel_ns = 0
            for level, kind, cdata in anc:
                if kind == SO_TIMESTAMPNS and level == socket.SOL_SOCKET:
                    sec, nsec = TIMESPEC.unpack(cdata)
                    kernel_ns = sec * 1_000_000_000 + nsec
            off = ((data[0] & 15) << 2) if raw4 else 0
            if len(data) < off + 8:
                continue
            icmp_type = data[off]
            if icmp_type == reply_type:
                rid, seq = ID_SEQ.unpack_from(data, off + 4)
                if raw and rid != ident:
                    self.foreign += 1
                    continue
                on_reply(addr[0], seq, data[off + 8 :], kernel_ns, now)
            elif raw:
                quoted = self._quoted_request(data, off)
                if quoted is not None:
                    on_error(IcmpError(addr[0], quoted[0], quoted[1], quoted[2], kernel_ns, now))

    def _quoted_request(self, data: bytes, off: int) -> tuple[str, int, int] | None:
        """(destination, sequence, kind) of our echo request quoted in a time-exceeded or unreachable message."""
        kind = {self.time_exceeded: TIME_EXCEEDED, self.unreachable: UNREACHABLE}.get(data[off], 0)
        inner = off + 8
        if not kind:
            return None
        if self.family == 4:
            if len(data) < inner + 20 or data[inner + 9] != socket.IPPROTO_ICMP:
                return None
            echo = inner + ((data[inner] & 15) << 2)
            destination = socket.inet_ntop(socket.AF_INET, data[inner + 16 : inner + 20])
        else:
            if len(data) < inner + 40 or data[inner + 6] != socket.IPPROTO_ICMPV6:
                return None
            echo = inner + 40
            destination = socket.inet_ntop(socket.AF_INET6, data[inner + 24 : inner + 40])
        if len(data) < echo + 8 or data[echo] != self.request_type:
            return None
        rid, seq = ID_SEQ.unpack_from(data, echo + 4)
        return (destination, seq, kind) if rid == self.ident else None

    def drain_errors(self, on_error: ErrorCallback) -> None:
        """Datagram sockets get ICMP errors through the error queue (IP_RECVERR), with the offender's address."""
        if self.raw:
            return
        recvmsg = self.sock.recvmsg
        while True:
            try:
                data, anc, _flags, addr = recvmsg(4096, 512, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                return
            now = time.monotonic_ns()
            kernel_ns, offender, kind = 0, "", 0
            for level, ctype, cdata in anc:
                if ctype == SO_TIMESTAMPNS and level == socket.SOL_SOCKET:
                    sec, nsec = TIMESPEC.unpack(cdata)
                    kernel_ns = sec * 1_000_000_000 + nsec
                elif (level, ctype) in ((socket.IPPROTO_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR)):
                    _errno, origin, icmp_type, _code, _pad = EXTENDED_ERR.unpack_from(cdata)
                    if origin not in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6):
                        continue
                    kind = {self.time_exceeded: TIME_EXCEEDED, self.unreachable: UNREACHABLE}.get(icmp_type, 0)
                    if self.family == 4:
                        offender = socket.inet_ntop(socket.AF_INET, cdata[20:24])
                    else:
                        offender = socket.inet_ntop(socket.AF_INET6, cdata[24:40])
            if kind and len(data) >= 8 and data[0] == self.request_type:
                on_error(IcmpError(offender, addr[0], ID_SEQ.unpack_from(data, 4)[1], kind, kernel_ns, now))
