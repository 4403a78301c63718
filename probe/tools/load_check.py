"""Quick load check: run infra-obs-probe against N loopback addresses (127.x.y.z) and print where it stands.

    python probe/tools/load_check.py --targets 100 1000 10000 --seconds 20

For each N: CPU seconds per 1,000 probes, received/sent, RSS, median RTT (median of the per-path medians from
/paths.json), /metrics scrape time and size, scheduler lag and skipped probes. Loopback only; needs root (or
CAP_NET_RAW, or a ping_group_range that includes the user) for ICMP.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def address(i: int) -> str:
    n = (127 << 24) + (1 << 16) + i + 1  # 127.1.0.1 upwards
    return socket.inet_ntoa(n.to_bytes(4, "big"))


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def get(url: str, timeout: float = 30) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def totals(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in ("sent_total", "received_total"):
        pattern = re.compile(rf"^infra_obs_probe_{name}{{[^}}]*probe=\"icmp\"}} (\S+)$", re.M)
        out[name] = sum(float(v) for v in pattern.findall(text))
    for name in ("skipped_total", "scheduler_lag_seconds_count", "scheduler_lag_seconds_sum"):
        out[name] = sum(float(v) for v in re.findall(rf"^infra_obs_probe_{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))
    for le, v in re.findall(r'^infra_obs_probe_scheduler_lag_seconds_bucket{le="([^"]+)"} (\S+)$', text, re.M):
        out[f"lag_le_{le}"] = float(v)
    return out


def lag_quantile(before: dict, after: dict, q: float) -> float:
    """Upper bound (bucket boundary, ms) of the q-quantile of the scheduler lag between two scrapes."""
    buckets = sorted((float(k[7:]), after[k] - before.get(k, 0)) for k in after if k.startswith("lag_le_"))
    total = buckets[-1][1]
    return next((le * 1000 for le, n in buckets if n >= q * total), float("inf"))


def run(n: int, seconds: float, warmup: float, interval: float, mtr: bool) -> dict:
    port = free_port()
    config = {
        "listen": f"127.0.0.1:{port}",
        "source": {"name": "load-check", "region": "lab", "az": "lab-a"},
        "interval": interval,
        "timeout": 1.0,
        "window": 60,
        "icmp": {"enabled": True, "payload_size": 56},
        "tcp": {"enabled": False},
        "mtr": {"enabled": mtr, "interval": 30, "max_hops": 4},
        "targets": {
            "static": [{"name": f"t{i}", "address": address(i), "region": "lab", "az": "lab-b"} for i in range(n)]
        },
    }
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump(config, f)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra_obs_probe", "--config", f.name, "--log-level", "warning"], env=env
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                get(base + "/-/healthy", 1)
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(warmup)
        # Counters are read when a scrape starts: time both ends just before their scrape. CPU is read after the
        # first scrape and before the second, so the window holds probing only.
        t0 = time.monotonic()
        first = get(base + "/metrics")
        cpu0 = cpu_seconds(proc.pid)
        time.sleep(seconds)
        cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
        body = get(base + "/metrics")
        before, after = totals(first.decode()), totals(body.decode())
        scrapes = []
        for _ in range(3):
            start = time.perf_counter()
            body = get(base + "/metrics")
            scrapes.append(time.perf_counter() - start)
        start = time.perf_counter()
        paths = json.loads(get(base + "/paths.json?window=10"))["paths"]
        paths_time = time.perf_counter() - start
        medians = [p["icmp"]["rtt_median_seconds"] for p in paths if p["icmp"]["rtt_median_seconds"] is not None]
        sent = after["sent_total"] - before["sent_total"]
        received = after["received_total"] - before["received_total"]
        lag_n = after["scheduler_lag_seconds_count"] - before["scheduler_lag_seconds_count"]
        lag_sum = after["scheduler_lag_seconds_sum"] - before["scheduler_lag_seconds_sum"]
        return {
            "targets": n,
            "probes_per_second": sent / (t1 - t0),
            "cpu_share_of_a_core": (cpu1 - cpu0) / seconds,
            "cpu_seconds_per_1000_probes": (cpu1 - cpu0) / sent * 1000 if sent else float("nan"),
            "received_over_sent": received / sent if sent else float("nan"),
            "rss_mib": rss_mib(proc.pid),
            "median_rtt_us": statistics.median(medians) * 1e6 if medians else float("nan"),
            "metrics_scrape_s": statistics.median(scrapes),
            "metrics_mib": len(body) / 2**20,
            "paths_json_s": paths_time,
            "mean_scheduler_lag_ms": lag_sum / lag_n * 1000 if lag_n else float("nan"),
            "lag_p50_under_ms": lag_quantile(before, after, 0.5),
            "lag_p99_under_ms": lag_quantile(before, after, 0.99),
            "skipped": after["skipped_total"] - before["skipped_total"],
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        os.unlink(f.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--seconds", type=float, default=20, help="measured time per run")
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--mtr", action="store_true", help="also run MTR traces (30 s interval)")
    args = parser.parse_args()
    for n in args.targets:
        result = run(n, args.seconds, args.warmup, args.interval, args.mtr)
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
