"""/paths.json (this exporter's numbers from its own raw samples) and the src x dst matrix assembled from every
peer's /paths.json: a failing column points at a destination, a failing row at a source, a single cell at a path."""

from __future__ import annotations

import html
import json
import statistics
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from . import __version__
from .config import Config, Health
from .discovery import Peer
from .engine import Prober

HEALTH_STATES = ("healthy", "degraded", "unhealthy", "nodata")


def local_paths(prober: Prober, cfg: Config, window: float | None = None) -> dict:
    """Per destination address: ICMP loss and exact RTT percentiles, TCP outcomes, and the current MTR path."""
    window = min(window or cfg.window, cfg.window)
    now = time.monotonic()
    snap = prober.snapshot
    paths: dict[tuple[str, str], dict] = {}

    def entry(s) -> dict:
        t = s.target
        key = (t.name, t.address)
        if key not in paths:
            paths[key] = {
                "dst_host": t.name,
                "dst_region": t.region,
                "dst_az": t.az,
                "target": t.address,
                "family": f"ipv{t.family}",
                "source": t.source,
                "icmp": None,
                "tcp": [],
                "mtr": None,
            }
        return paths[key]

    for s in snap.icmp:
        entry(s)["icmp"] = s.summary(now, window)
    for s in snap.tcp:
        entry(s)["tcp"].append(s.summary(now, window))
    for s in snap.mtr:
        entry(s)["mtr"] = s.summary()
    src = cfg.source
    return {
        "source": {"name": src.name, "region": src.region, "az": src.az},
        "version": __version__,
        "window_seconds": window,
        "generated_at": time.time(),
        "paths": list(paths.values()),
    }


def classify(loss: float | None, rtt_p99: float | None, tcp_failure: float | None, h: Health) -> str:
    if loss is None and tcp_failure is None:
        return "nodata"
    worst = max(x for x in (loss, tcp_failure) if x is not None)
    if worst >= h.loss_unhealthy or (rtt_p99 is not None and rtt_p99 >= h.rtt_p99_unhealthy):
        return "unhealthy"
    if worst >= h.loss_degraded or (rtt_p99 is not None and rtt_p99 >= h.rtt_p99_degraded):
        return "degraded"
    return "healthy"


def _fetch(peer: Peer, timeout: float) -> dict:
    try:
        with urllib.request.urlopen(peer.url("/paths.json"), timeout=timeout) as response:
            return {"ok": True, "data": json.load(response)}
    except Exception as e:
        return {"ok": False, "error": str(e)}


def _aggregate(paths: list[dict], h: Health) -> dict:
    """One host pair: sums of samples, and the worst path's percentiles (a pair can have IPv4 and IPv6 paths)."""
    sent = received = attempts = failures = 0
    medians, p99s = [], []
    for p in paths:
        icmp = p.get("icmp") or {}
        sent += icmp.get("sent") or 0
        received += icmp.get("received") or 0
        if icmp.get("rtt_median_seconds") is not None:
            medians.append(icmp["rtt_median_seconds"])
            p99s.append(icmp["rtt_p99_seconds"])
        for t in p.get("tcp") or []:
            attempts += t.get("attempts") or 0
            failures += (t.get("attempts") or 0) - (t.get("outcomes") or {}).get("ok", 0)
    loss = (sent - received) / sent if sent else None
    tcp_failure = failures / attempts if attempts else None
    p99 = max(p99s) if p99s else None
    return {
        "sent": sent,
        "received": received,
        "loss_ratio": loss,
        "rtt_median_seconds": max(medians) if medians else None,
        "rtt_p99_seconds": p99,
        "tcp_attempts": attempts,
        "tcp_failures": failures,
        "tcp_failure_ratio": tcp_failure,
        "health": classify(loss, p99, tcp_failure, h),
    }


def assemble(own: dict, peers: list[Peer], cfg: Config) -> dict:
    """Fetch every known peer's /paths.json (in parallel, each with a short timeout) and build both matrices."""
    h = cfg.health
    me = own["source"]
    sources = [{"host": me["name"], "region": me["region"], "az": me["az"], "url": "", "ok": True, "data": own}]
    if peers:
        with ThreadPoolExecutor(max_workers=min(32, len(peers))) as pool:
            results = list(pool.map(lambda p: _fetch(p, cfg.matrix.timeout), peers))
        for peer, result in zip(peers, results, strict=True):
            row = {"host": peer.host, "region": peer.region, "az": peer.az, "url": peer.url("/paths.json"), **result}
            if result["ok"]:
                reported = result["data"].get("source") or {}
                row["region"], row["az"] = reported.get("region", peer.region), reported.get("az", peer.az)
            sources.append(row)

    hosts: dict[str, dict] = {s["host"]: {"host": s["host"], "region": s["region"], "az": s["az"]} for s in sources}
    for s in sources:
        for p in (s.get("data") or {}).get("paths", []) if s["ok"] else []:
            hosts.setdefault(p["dst_host"], {"host": p["dst_host"], "region": p["dst_region"], "az": p["dst_az"]})
    ordered = sorted(hosts.values(), key=lambda x: (x["region"], x["az"], x["host"]))
    sources.sort(key=lambda x: (x["region"], x["az"], x["host"]))

    host_cells = []
    for s in sources:
        by_dst: dict[str, list[dict]] = {}
        for p in s["data"]["paths"] if s["ok"] else []:
            by_dst.setdefault(p["dst_host"], []).append(p)
        for d in ordered:
            cell = {"src": s["host"], "dst": d["host"], "src_region": s["region"], "src_az": s["az"]}
            cell.update(dst_region=d["region"], dst_az=d["az"])
            if d["host"] == s["host"] or not by_dst.get(d["host"]):
                cell.update(health="nodata", self=d["host"] == s["host"])
            else:
                cell.update(_aggregate(by_dst[d["host"]], h), self=False)
                cell["paths"] = [_path_brief(p) for p in by_dst[d["host"]]]
            host_cells.append(cell)
    return {
        "generated_at": time.time(),
        "window_seconds": own["window_seconds"],
        "health_thresholds": h.__dict__,
        "sources": [{k: v for k, v in s.items() if k != "data"} for s in sources],
        "hosts": ordered,
        "host_matrix": host_cells,
        "az_matrix": _az_cells(host_cells, ordered, h),
    }


def _path_brief(p: dict) -> dict:
    icmp = p.get("icmp") or {}
    mtr = p.get("mtr") or {}
    return {
        "target": p["target"],
        "family": p["family"],
        "loss_ratio": icmp.get("loss_ratio"),
        "rtt_median_seconds": icmp.get("rtt_median_seconds"),
        "rtt_p99_seconds": icmp.get("rtt_p99_seconds"),
        "tcp": [{"port": t["port"], "outcomes": t["outcomes"]} for t in p.get("tcp") or []],
        "path_id": mtr.get("path_id"),
    }


def _az_cells(host_cells: list[dict], hosts: list[dict], h: Health) -> list[dict]:
    zones = sorted({(x["region"], x["az"]) for x in hosts})
    groups: dict[tuple, list[dict]] = {}
    for c in host_cells:
        if not c["self"]:
            groups.setdefault((c["src_region"], c["src_az"], c["dst_region"], c["dst_az"]), []).append(c)
    cells = []
    for sr, sa in zones:
        for dr, da in zones:
            members = [c for c in groups.get((sr, sa, dr, da), []) if c["health"] != "nodata"]
            cell = {"src_region": sr, "src_az": sa, "dst_region": dr, "dst_az": da}
            cell["host_cells"] = {state: 0 for state in HEALTH_STATES}
            for c in groups.get((sr, sa, dr, da), []):
                cell["host_cells"][c["health"]] += 1
            if not members:
                cells.append({**cell, "health": "nodata"})
                continue
            sent = sum(c["sent"] for c in members)
            received = sum(c["received"] for c in members)
            attempts = sum(c["tcp_attempts"] for c in members)
            failures = sum(c["tcp_failures"] for c in members)
            medians = [c["rtt_median_seconds"] for c in members if c["rtt_median_seconds"] is not None]
            p99s = [c["rtt_p99_seconds"] for c in members if c["rtt_p99_seconds"] is not None]
            loss = (sent - received) / sent if sent else None
            tcp_failure = failures / attempts if attempts else None
            p99 = max(p99s) if p99s else None
            cells.append(
                {
                    **cell,
                    "sent": sent,
                    "received": received,
                    "loss_ratio": loss,
                    "rtt_median_seconds": statistics.median(medians) if medians else None,
                    "rtt_p99_seconds": p99,
                    "tcp_attempts": attempts,
                    "tcp_failures": failures,
                    "tcp_failure_ratio": tcp_failure,
                    "health": classify(loss, p99, tcp_failure, h),
                }
            )
    return cells


# ---- HTML ------------------------------------------------------------------------------------------------------

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table.matrix{border-collapse:collapse;margin-bottom:2em;font-size:12px}
table.matrix th,table.matrix td{border:1px solid #bbb;padding:3px 6px;text-align:center;white-space:nowrap}
table.matrix th.group{background:#e8eaf6}
td.healthy{background:#c8e6c9}td.degraded{background:#fff59d}td.unhealthy{background:#ef9a9a}
td.nodata{background:#f0f0f0;color:#888}td.self{background:#fff;color:#bbb}
.legend span{display:inline-block;padding:2px 8px;margin-right:6px;border:1px solid #bbb}
"""


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.3g} ms"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.3g}%"


def _cell(level: str, src: str, dst: str, c: dict) -> str:
    attrs = {
        "class": "self" if c.get("self") else c["health"],
        "data-level": level,
        "data-src": src,
        "data-dst": dst,
        "data-src-region": c["src_region"],
        "data-src-az": c["src_az"],
        "data-dst-region": c["dst_region"],
        "data-dst-az": c["dst_az"],
        "data-health": c["health"],
    }
    for key in ("loss_ratio", "rtt_median_seconds", "rtt_p99_seconds", "tcp_failure_ratio"):
        if c.get(key) is not None:
            attrs["data-" + key.replace("_", "-")] = repr(c[key])
    if c.get("self"):
        text = "&ndash;"
    elif c["health"] == "nodata":
        text = "no data"
    else:
        text = f"loss {_pct(c['loss_ratio'])}<br>p50 {_ms(c['rtt_median_seconds'])}<br>p99 {_ms(c['rtt_p99_seconds'])}"
        if c.get("tcp_attempts"):
            text += f"<br>tcp fail {_pct(c['tcp_failure_ratio'])}"
    attrs["title"] = f"{src} -> {dst}: {c['health']}"
    attr_text = " ".join(f'{k}="{html.escape(str(v))}"' for k, v in attrs.items())
    return f"<td {attr_text}>{text}</td>"


def _group_header(columns: list[dict], keys: tuple[str, ...], corner: str) -> str:
    """One header row per grouping key (region, then AZ, then host), each spanning its run of columns."""
    rows = []
    for depth, key in enumerate(keys):
        cells = [f'<th class="group">{html.escape(corner) if depth == len(keys) - 1 else ""}</th>']
        run_start = 0
        for i in range(1, len(columns) + 1):
            prefix = tuple(columns[i - 1][k] for k in keys[: depth + 1])
            if i == len(columns) or tuple(columns[i][k] for k in keys[: depth + 1]) != prefix:
                span = i - run_start
                cells.append(f'<th class="group" colspan="{span}">{html.escape(columns[i - 1][key] or "-")}</th>')
                run_start = i
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "<thead>" + "".join(rows) + "</thead>"


def render_html(m: dict) -> str:
    zones = sorted({(c["src_region"], c["src_az"]) for c in m["az_matrix"]})
    zone_cols = [{"region": r, "az": a} for r, a in zones]
    by_zone = {(c["src_region"], c["src_az"], c["dst_region"], c["dst_az"]): c for c in m["az_matrix"]}
    az_rows = []
    for r, a in zones:
        cells = "".join(_cell("az", f"{r}/{a}", f"{dr}/{da}", by_zone[r, a, dr, da]) for dr, da in zones)
        az_rows.append(f'<tr><th class="group">{html.escape(r)} / {html.escape(a)}</th>{cells}</tr>')

    hosts = m["hosts"]
    by_pair = {(c["src"], c["dst"]): c for c in m["host_matrix"]}
    host_rows = []
    for s in m["sources"]:
        cells = "".join(_cell("host", s["host"], d["host"], by_pair[s["host"], d["host"]]) for d in hosts)
        label = f"{s['region']} / {s['az']} / {s['host']}"
        note = "" if s["ok"] else f' <span title="{html.escape(s.get("error", ""))}">(unreachable)</span>'
        host_rows.append(
            f'<tr data-src="{html.escape(s["host"])}" data-reachable="{str(s["ok"]).lower()}">'
            f'<th class="group">{html.escape(label)}{note}</th>{cells}</tr>'
        )
    t = m["health_thresholds"]
    legend = (
        f'<p class="legend"><span class="healthy">healthy</span><span class="degraded">degraded: loss &ge; '
        f"{_pct(t['loss_degraded'])} or p99 &ge; {_ms(t['rtt_p99_degraded'])}</span>"
        f'<span class="unhealthy">unhealthy: loss &ge; {_pct(t["loss_unhealthy"])} or p99 &ge; '
        f'{_ms(t["rtt_p99_unhealthy"])}</span><span class="nodata">no data</span></p>'
    )
    generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(m["generated_at"]))
    unreachable = sum(1 for s in m["sources"] if not s["ok"])
    corner = "source \\ destination"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="30">'
        f"<title>infra-obs-probe matrix</title><style>{STYLE}</style></head><body>"
        "<h1>Network probe matrix</h1>"
        f"<p>Rows are sources, columns destinations. Window {m['window_seconds']:g} s, generated {generated}, "
        f"{len(m['sources'])} sources ({unreachable} unreachable). TCP failures count like loss. "
        f'Raw data: <a href="matrix.json">matrix.json</a>.</p>{legend}'
        '<h2>Availability zones</h2><table class="matrix" id="az-matrix">'
        f"{_group_header(zone_cols, ('region', 'az'), corner)}<tbody>{''.join(az_rows)}</tbody></table>"
        '<h2>Hosts</h2><table class="matrix" id="host-matrix">'
        f"{_group_header(hosts, ('region', 'az', 'host'), corner)}"
        f"<tbody>{''.join(host_rows)}</tbody></table></body></html>"
    )
