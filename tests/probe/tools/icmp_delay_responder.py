"""Answer ICMPv4 echo requests from userspace: after a fixed delay for chosen addresses, at once for the others.

Run it where the kernel does not answer (`sysctl net.ipv4.icmp_echo_ignore_all=1`, in a network namespace of
its own) to get a known latency: the delay counts from the kernel's receive timestamp of the request, so the
expected RTT is the delay plus a few microseconds. Needs CAP_NET_RAW.

    icmp_delay_responder.py --delay 0.03 --source 127.0.0.1    # 30 ms for requests from 127.0.0.1
    icmp_delay_responder.py --corrupt-to 127.0.0.3              # replies from .3 carry a flipped payload byte
    icmp_delay_responder.py --decoys-to 127.0.0.2               # decoy replies before each real one from .2

The delay applies to a request whose source is one of --source or whose destination is one of --destination
(to every request when neither is given, to none with --delay 0). Decoys: a reply with another identifier, one
with a sequence number nobody sent, and one from the wrong sender. Replies come from the address the request
was sent to. Prints "ready" once listening.

--holds FILE appends a line per reply: "SOURCE DESTINATION SECONDS", the time from the kernel's receive stamp of
the request to the return of the reply's send. That is the delay the responder really gave: on a busy machine it
is descheduled now and then and replies late, and a test compares the exporter's numbers with this, not with
--delay (which is only the least a reply is held).
"""

from __future__ import annotations

import argparse
import heapq
import select
import socket
import struct
import sys
import time

SO_TIMESTAMPNS = 35
SOL_RAW = 255
ICMP_FILTER = 1
IP_PKTINFO = 8
# select() wakes 0.1-0.2 ms late on a busy virtual machine, as much as the precision the delay tests look for: sleep
# until this much before a reply is due, then spin to the due time.
SPIN_NS = 2_000_000


def checksum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_reply(ident: int, seq: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHH", 0, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 0, 0, checksum(header + payload), ident, seq) + payload


def holds(text: str, to: str, source: str) -> list[float]:
    """The real holds, in seconds, of the replies to `to` from `source`, out of a --holds file's text."""
    return [float(seconds) for line in text.splitlines() for t, s, seconds in [line.split()] if (t, s) == (to, source)]


class Responder:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        # Only echo requests (type 8): our own replies must not come back to us.
        self.sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("I", 0xFFFFFFFF & ~(1 << 8)))
        # (due ns, n, received ns; realtime), packet, to, from
        self.queue: list[tuple[int, int, int, bytes, str, str]] = []
        self.n = 0
        self.holds = open(args.holds, "a", buffering=1) if args.holds else None  # noqa: SIM115 (open as long as we run)

    def chosen(self, src: str, dst: str) -> bool:
        a = self.args
        if not a.source and not a.destination:
            return True
        return src in a.source or dst in a.destination

    def send(self, packet: bytes, to: str, source: str) -> None:
        pktinfo = struct.pack("=i4s4s", 0, socket.inet_aton(source), b"\0\0\0\0")
        self.sock.sendmsg([packet], [(socket.IPPROTO_IP, IP_PKTINFO, pktinfo)], 0, (to, 0))

    def later(self, due: int, received: int, packet: bytes, to: str, source: str) -> None:
        self.n += 1
        heapq.heappush(self.queue, (due, self.n, received, packet, to, source))

    def handle(self, data: bytes, received_ns: int) -> None:
        ihl = (data[0] & 15) * 4
        src = socket.inet_ntoa(data[12:16])
        dst = socket.inet_ntoa(data[16:20])
        icmp = data[ihl:]
        if len(icmp) < 8 or icmp[0] != 8:
            return
        ident, seq = struct.unpack_from("!HH", icmp, 4)
        payload = icmp[8:]
        a = self.args
        if dst in a.decoys_to:
            self.send(echo_reply(ident ^ 0xFFFF, seq, payload), src, dst)  # someone else's identifier
            self.send(echo_reply(ident, (seq + 1000) & 0xFFFF, payload), src, dst)  # a sequence not in flight
            self.send(echo_reply(ident, seq, payload), src, a.decoy_source)  # right probe, wrong sender
        if dst in a.corrupt_to and payload:
            payload = payload[:-1] + bytes([payload[-1] ^ 0xFF])
        delay = int(a.delay * 1e9) if self.chosen(src, dst) else 0
        self.later(received_ns + delay, received_ns, echo_reply(ident, seq, payload), src, dst)

    def run(self) -> None:
        print("ready", flush=True)
        while True:
            timeout = None
            if self.queue:
                timeout = max(0.0, (self.queue[0][0] - SPIN_NS - time.time_ns()) / 1e9)
            readable, _, _ = select.select([self.sock], [], [], timeout)
            if readable:
                data, anc, _flags, _addr = self.sock.recvmsg(65535, 64)
                stamp = time.time_ns()
                for level, kind, cdata in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        sec, nsec = struct.unpack("=qq", cdata)
                        stamp = sec * 1_000_000_000 + nsec
                self.handle(data, stamp)
            while self.queue and self.queue[0][0] <= time.time_ns() + SPIN_NS:
                due, _, received, packet, to, source = heapq.heappop(self.queue)
                while time.time_ns() < due:
                    pass
                self.send(packet, to, source)
                if self.holds:
                    self.holds.write(f"{to} {source} {(time.time_ns() - received) / 1e9:.9f}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to hold replies to chosen requests")
    parser.add_argument("--source", action="append", default=[], help="choose requests from this address")
    parser.add_argument("--destination", action="append", default=[], help="choose requests to this address")
    parser.add_argument("--corrupt-to", action="append", default=[], help="corrupt replies from this address")
    parser.add_argument("--decoys-to", action="append", default=[], help="send decoys before replies from here")
    parser.add_argument("--decoy-source", default="127.0.0.254", help="sender of the wrong-sender decoy")
    parser.add_argument("--holds", help="append each reply's real hold to this file")
    Responder(parser.parse_args()).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
