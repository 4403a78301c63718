"""Running checks: a burst of calls per black-box check (latency percentiles and error ratio against thresholds),
and the white-box checks of what Consul and Prometheus hold. A check never raises: what went wrong is its result."""

from __future__ import annotations

import http.client
import json
import math
import socket
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from ..config import host_port
from ..discovery import client as consul_client
from .config import Check, QualityConfig

MAX_BODY = 65536
ERROR_TEXT = 200


class CheckFailed(Exception):
    """A call that answered, but not as the check expects."""


@dataclass(frozen=True)
class Result:
    check: str
    service: str
    kind: str
    target: str
    ok: bool
    measured: str
    threshold: str
    error: str = ""
    p50: float | None = None  # seconds, burst checks only
    p99: float | None = None
    error_ratio: float | None = None
    calls: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def describe(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        text = f"TLS certificate not valid: {error.verify_message}"
    elif isinstance(error, CheckFailed):
        text = str(error)
    elif isinstance(error, socket.timeout | TimeoutError):
        text = "timed out"
    elif isinstance(error, OSError) and error.strerror:
        text = error.strerror
    else:
        text = f"{type(error).__name__}: {error}"
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= ERROR_TEXT else text[:ERROR_TEXT] + "..."


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest rank: a value that was measured (p99 of 20 calls is the slowest)."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _burst(check: Check, call: Callable[[], None]) -> Result:
    def timed(_: int) -> tuple[float, str]:
        start = time.perf_counter()
        try:
            call()
            error = ""
        except Exception as e:  # each call's failure is a measurement
            error = describe(e)
        return time.perf_counter() - start, error

    with ThreadPoolExecutor(check.burst.concurrency) as pool:
        outcomes = list(pool.map(timed, range(check.burst.count)))
    durations = sorted(d for d, _ in outcomes)
    errors = [e for _, e in outcomes if e]
    p50, p99 = percentile(durations, 0.5), percentile(durations, 0.99)
    ratio = len(errors) / len(outcomes)
    t = check.thresholds
    breaches = []
    if ratio > t.error_ratio:
        breaches.append(f"error ratio {ratio:.2f} > {t.error_ratio:g}")
    if t.p50 and p50 > t.p50:
        breaches.append(f"p50 {_ms(p50)} > {_ms(t.p50)}")
    if t.p99 and p99 > t.p99:
        breaches.append(f"p99 {_ms(p99)} > {_ms(t.p99)}")
    limits = [f"errors <= {t.error_ratio:g}"]
    limits += [f"p50 <= {_ms(t.p50)}"] if t.p50 else []
    limits += [f"p99 <= {_ms(t.p99)}"] if t.p99 else []
    error = "; ".join(breaches)
    if errors:
        error += f"{'; ' if error else ''}first error: {errors[0]}"
    return Result(
        check=check.name,
        service=check.service,
        kind=check.kind,
        target=check.target,
        ok=not breaches,
        measured=f"p50 {_ms(p50)}, p99 {_ms(p99)}, errors {len(errors)}/{len(outcomes)}",
        threshold=", ".join(limits),
        error=error,
        p50=p50,
        p99=p99,
        error_ratio=ratio,
        calls=len(outcomes),
    )


def _tls_context(ca_file: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file or None)


def _http_call(check: Check) -> Callable[[], None]:
    parts = urllib.parse.urlsplit(check.url)
    https = parts.scheme == "https"
    context = _tls_context(check.ca_file) if https else None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def call() -> None:
        if https:
            conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=check.timeout, context=context)
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=check.timeout)
        try:
            conn.connect()
            # A certificate about to expire fails the call before it sends anything.
            if https and check.min_days_valid:
                not_after = ssl.cert_time_to_seconds(conn.sock.getpeercert()["notAfter"])
                days = (not_after - time.time()) / 86400
                if days < check.min_days_valid:
                    raise CheckFailed(f"TLS certificate expires in {days:.1f} days (< {check.min_days_valid})")
            conn.request("GET", target, headers={"User-Agent": "infra-obs-quality", "Connection": "close"})
            response = conn.getresponse()
            body = response.read(MAX_BODY)
            if response.status not in check.status:
                raise CheckFailed(f"status {response.status}, expected {'/'.join(map(str, check.status))}")
            if check.body_contains and check.body_contains.encode() not in body:
                raise CheckFailed(f"body does not contain {check.body_contains!r}")
        finally:
            conn.close()

    return call


def _tcp_call(check: Check) -> Callable[[], None]:
    def call() -> None:
        socket.create_connection((check.host, check.port), timeout=check.timeout).close()

    return call


def _grpc_burst(check: Check) -> Result:
    import grpc  # noqa: PLC0415 - only checkers with gRPC checks need it (the wheel's grpc extra)
    from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: PLC0415

    address = host_port(check.host, check.port)
    if check.tls:
        roots = None
        if check.ca_file:
            with open(check.ca_file, "rb") as f:
                roots = f.read()
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=roots))
    else:
        channel = grpc.insecure_channel(address)
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=check.grpc_service)

    def call() -> None:
        try:
            response = stub.Check(request, timeout=check.timeout)
        except grpc.RpcError as e:
            raise CheckFailed(f"{e.code().name}: {e.details()}") from None
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            raise CheckFailed(f"status {health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)}")

    try:
        return _burst(check, call)
    finally:
        channel.close()


def _row(check: Check, target: str, measured: str, threshold: str, problem: str = "") -> Result:
    """A result that is not a burst's: it passes unless there is a problem to tell."""
    error = describe(CheckFailed(problem)) if problem else ""
    return Result(check.name, check.service, check.kind, target, not problem, measured, threshold, error)


def _instances_row(check: Check, found: int) -> Result:
    few = found < check.min_instances
    return _row(
        check,
        check.target_service,
        f"{found} instances",
        f">= {check.min_instances} instances",
        f"{found} instances of {check.target_service} in Consul" if few else "",
    )


def _consul(check: Check, config: QualityConfig) -> list[Result]:
    _, entries = consul_client(config.consul_url).health.service(check.target_service)
    rows = [_instances_row(check, len(entries))]
    for entry in entries:
        failing = [c for c in entry.get("Checks") or [] if c.get("Status") != "passing"]
        text = "; ".join(f"{c.get('Name')}: {c.get('Status')}: {str(c.get('Output') or '').strip()}" for c in failing)
        measured = f"{len(failing)} checks not passing" if failing else "all checks passing"
        target = f"{entry['Node']['Node']}/{entry['Service']['ID']}"
        rows.append(_row(check, target, measured, "every check passing", text))
    return rows


def _prometheus(check: Check, config: QualityConfig) -> list[Result]:
    """Each instance Consul holds is scraped (up 1) under the region and AZ it registered with."""
    _, entries = consul_client(config.consul_url).catalog.service(check.target_service)
    query = urllib.parse.urlencode({"query": f'up{{job="{check.target_service}"}}'})
    with urllib.request.urlopen(f"{config.prometheus_url}/api/v1/query?{query}", timeout=check.timeout) as response:
        series = json.load(response)["data"]["result"]
    scraped = {s["metric"].get("instance", ""): s for s in series}
    rows = [_instances_row(check, len(entries))]
    for entry in entries:
        meta = entry.get("ServiceMeta") or {}
        instance = host_port(
            entry.get("ServiceAddress") or entry.get("Address") or "", int(entry.get("ServicePort") or 0)
        )
        found = scraped.get(instance)
        wanted = {k: meta[k] for k in ("region", "az") if meta.get(k)}
        if found is None:
            measured, problem = "not scraped", f"Prometheus has no up series for {instance}"
        else:
            labels = found["metric"]
            measured = f"up {found['value'][1]}" + "".join(f", {k}={labels.get(k, '')}" for k in wanted)
            wrong = [
                f"{k} is {labels.get(k, '')!r}, registered as {v!r}" for k, v in wanted.items() if labels.get(k) != v
            ]
            problem = "; ".join(([] if found["value"][1] == "1" else ["the last scrape failed"]) + wrong)
        threshold = "up 1" + "".join(f", {k}={v}" for k, v in wanted.items())
        rows.append(_row(check, f"{entry.get('Node')}/{instance}", measured, threshold, problem))
    return rows


def run_check(check: Check, config: QualityConfig) -> list[Result]:
    try:
        if check.kind == "http":
            return [_burst(check, _http_call(check))]
        if check.kind == "tcp":
            return [_burst(check, _tcp_call(check))]
        if check.kind == "grpc":
            return [_grpc_burst(check)]
        if check.kind == "consul":
            return _consul(check, config)
        return _prometheus(check, config)
    except Exception as e:  # the check could not run at all (Consul or Prometheus down, a CA file missing)
        return [_row(check, check.target, "not measured", "", describe(e))]


def run_all(config: QualityConfig, checks: tuple[Check, ...] | None = None) -> list[Result]:
    """Every check of this checker, config.parallel at a time; results in the checks' order."""
    checks = config.mine() if checks is None else checks
    with ThreadPoolExecutor(config.parallel) as pool:
        return [row for rows in pool.map(lambda c: run_check(c, config), checks) for row in rows]


def table(results: list[Result]) -> str:
    """The gate's table: check, target, result, measured value, threshold (and why, for a failure)."""
    head = ("CHECK", "TARGET", "RESULT", "MEASURED", "THRESHOLD")
    caps = (64, 100, 6, 60, 60)  # a longer cell is cut, with "..."; the FAILED lines and the JSON keep it whole
    rows = [
        tuple(v if len(v) <= cap else v[: cap - 3] + "..." for v, cap in zip(row, caps, strict=True))
        for row in [head, *[(r.check, r.target, "ok" if r.ok else "FAIL", r.measured, r.threshold) for r in results]]
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    for r in results:
        if not r.ok:
            lines.append(f"FAILED {r.check} {r.target}: {r.error}")
    return "\n".join(lines)
