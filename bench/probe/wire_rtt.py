"""Echo RTTs as the loopback device saw them: a packet socket on lo pairs each ICMPv4 echo request with its reply by
(addresses, identifier, sequence) and takes the kernel's timestamps of both as lo hands them to the stack (a socket
bound to one protocol sees each packet once, as received: PACKET_HOST). Run it inside the delay test's network
namespace: the difference between the injected delay and these RTTs is the responder's own lateness, the difference
between a prober's figure and these is the prober's error.

    wire_rtt.py    # until SIGTERM or SIGINT, then prints {"destination": [rtt seconds, ...], ...} as JSON

Needs CAP_NET_RAW. IPv4 only.
"""

from __future__ import annotations

import json
import select
import signal
import socket
import struct
import sys

ETH_P_IP = 0x0800
SO_TIMESTAMPNS = 35
PACKET_HOST = 0
ECHO_REPLY, ECHO_REQUEST = 0, 8


def main() -> int:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    sock.bind(("lo", ETH_P_IP))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    sent: dict[tuple[bytes, bytes, int, int], int] = {}  # (source, destination, id, seq) -> ns
    rtts: dict[str, list[float]] = {}
    print("ready", flush=True)
    while not stop:
        try:
            readable, _, _ = select.select([sock], [], [], 0.2)
        except InterruptedError:
            continue
        if not readable:
            continue
        data, anc, _flags, addr = sock.recvmsg(2048, 64)
        if addr[2] != PACKET_HOST or len(data) < 20 or data[9] != socket.IPPROTO_ICMP:
            continue
        stamp = None
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("=qq", cdata)
                stamp = sec * 1_000_000_000 + nsec
        icmp = data[(data[0] & 15) * 4 :]
        if stamp is None or len(icmp) < 8:
            continue
        ident, seq = struct.unpack_from("!HH", icmp, 4)
        src, dst = data[12:16], data[16:20]
        if icmp[0] == ECHO_REQUEST:
            sent[(src, dst, ident, seq)] = stamp
        elif icmp[0] == ECHO_REPLY:
            start = sent.pop((dst, src, ident, seq), None)  # the reply goes back from the destination
            if start is not None:
                rtts.setdefault(socket.inet_ntoa(src), []).append((stamp - start) / 1e9)
        if len(sent) > 100_000:  # requests never answered
            sent.clear()
    json.dump(rtts, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
