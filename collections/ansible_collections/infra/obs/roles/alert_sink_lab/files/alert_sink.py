"""The lab's alert receiver: records every Alertmanager webhook notification it gets, so tests and `make demo` can
say who was told what. POST /RECEIVER (the path names the receiver) with Alertmanager's JSON body is kept, one JSON
line per notification, in memory and in the log file; GET /notifications[?receiver=NAME] lists them;
/metrics counts them per receiver; /-/healthy answers 200. Standard library only: it runs on any lab host."""

import argparse
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

RECEIVER = re.compile(r"/([a-z0-9][a-z0-9_.-]{0,62})")
MAX_BODY = 1 << 20


class Sink:
    def __init__(self, log_path: str):
        self.lock = threading.Lock()
        self.notifications: list[dict] = []
        self.log_path = log_path

    def add(self, receiver: str, payload: dict) -> None:
        record = {"receiver": receiver, "received_at": time.time(), "payload": payload}
        with self.lock:
            self.notifications.append(record)
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(json.dumps(record, sort_keys=True) + "\n")

    def listed(self, receiver: str | None) -> list[dict]:
        with self.lock:
            return [n for n in self.notifications if receiver is None or n["receiver"] == receiver]

    def metrics(self) -> str:
        counts: dict[str, int] = {}
        for n in self.listed(None):
            counts[n["receiver"]] = counts.get(n["receiver"], 0) + 1
        lines = ["# HELP infra_obs_alert_sink_notifications_total Notifications received, by receiver.",
                 "# TYPE infra_obs_alert_sink_notifications_total counter"]  # fmt: skip
        lines += [f'infra_obs_alert_sink_notifications_total{{receiver="{r}"}} {c}' for r, c in sorted(counts.items())]
        return "\n".join(lines) + "\n"


def handler(sink: Sink) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def send(self, status: int, body: str, content_type: str = "text/plain; charset=utf-8") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            receiver = RECEIVER.fullmatch(urlsplit(self.path).path)
            length = int(self.headers.get("Content-Length") or 0)
            if not receiver or not 0 < length <= MAX_BODY:
                self.send(400, "POST /RECEIVER with a JSON body of at most 1 MiB\n")
                return
            try:
                payload = json.loads(self.rfile.read(length))
            except ValueError:
                self.send(400, "the body is not JSON\n")
                return
            if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
                self.send(400, "not an Alertmanager notification (no alerts list)\n")
                return
            sink.add(receiver.group(1), payload)
            self.send(200, "recorded\n")

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/notifications":
                receiver = parse_qs(url.query).get("receiver", [None])[0]
                self.send(200, json.dumps(sink.listed(receiver)), "application/json")
            elif url.path == "/metrics":
                self.send(200, sink.metrics(), "text/plain; version=0.0.4")
            elif url.path == "/-/healthy":
                self.send(200, "ok\n")
            else:
                self.send(404, "not found\n")

        def log_message(self, *args) -> None:
            """Quiet: the records are the log."""

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", default="0.0.0.0:9099", help="HOST:PORT")
    parser.add_argument("--log", required=True, help="file the notifications are appended to, one JSON line each")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    ThreadingHTTPServer((host, int(port)), handler(Sink(args.log))).serve_forever()


if __name__ == "__main__":
    main()
