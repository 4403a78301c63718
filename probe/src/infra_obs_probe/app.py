"""The running exporter: prober, HTTP server and Consul thread, driven by signals (HUP reloads, TERM/INT stop)."""

from __future__ import annotations

import logging
import queue
import signal
import sys
import time

from . import __version__, icmp, matrix
from .config import Config, ConfigError, load
from .discovery import Discovery
from .engine import Prober
from .httpd import HttpServer
from .series import Target
from .status import Status

log = logging.getLogger("infra_obs_probe")


def static_targets(cfg: Config) -> list[Target]:
    return [Target(t.name, t.address, t.family, t.region, t.az, "static", t.tcp_ports) for t in cfg.static]


class App:
    def __init__(self, config: Config):
        self.config = config
        self.status = Status()
        self.prober = Prober(config)
        self.discovery = Discovery(self.prober, self.status, config)
        self.http = HttpServer(self)
        self._signals: queue.SimpleQueue[str] = queue.SimpleQueue()

    def matrix(self) -> dict:
        own = matrix.local_paths(self.prober, self.config)
        return matrix.assemble(own, self.discovery.peers, self.config)

    def run(self) -> int:
        cfg = self.config
        if cfg.icmp.enabled or cfg.mtr.enabled:
            try:  # fail at start, loudly, rather than count every probe as a send error
                icmp.IcmpSocket(4, cfg.icmp.socket).close()
            except OSError as e:
                log.error("%s", e)
                return 1
        try:
            self.http.start(cfg.listen_host, cfg.listen_port)
        except OSError as e:
            log.error("cannot listen on %s: %s", cfg.listen, e.strerror)
            return 1
        # A /metrics render at 10,000 paths holds the GIL for ~0.5 s in slices: keep the slices short for the
        # probe loop (the default 5 ms shows up as scheduler lag).
        sys.setswitchinterval(0.001)
        # SimpleQueue.put is safe in a signal handler; the main thread only waits on the queue.
        signal.signal(signal.SIGHUP, lambda *_: self._signals.put("reload"))
        signal.signal(signal.SIGTERM, lambda *_: self._signals.put("stop"))
        signal.signal(signal.SIGINT, lambda *_: self._signals.put("stop"))
        self.prober.update(source="static", targets=static_targets(cfg))
        self.prober.start()
        self.discovery.start()
        log.info(
            "infra-obs-probe %s started as %s (%s/%s)", __version__, cfg.source.name, cfg.source.region, cfg.source.az
        )
        while True:
            try:
                what = self._signals.get(timeout=1.0)
            except queue.Empty:
                continue
            if what == "reload":
                self.reload()
            else:
                break
        log.info("shutting down")
        self.discovery.stop()
        self.http.stop()
        self.prober.stop()
        return 0

    def reload(self) -> None:
        path = self.config.path
        try:
            new = load(path)
            if (new.listen_host, new.listen_port) != (self.config.listen_host, self.config.listen_port):
                try:
                    self.http.rebind(new.listen_host, new.listen_port)
                except OSError as e:
                    raise ConfigError(path, "listen", f"cannot be bound: {e.strerror}", new.listen) from None
        except ConfigError as e:
            self.status.config_ok = 0
            self.status.config_error = str(e)
            log.error("configuration reload refused, still running the last good one: %s", e)
            return
        self.prober.update(config=new, source="static", targets=static_targets(new))
        self.discovery.configure(new)
        self.config = new
        self.status.config_ok = 1
        self.status.config_ok_time = time.time()
        self.status.config_error = ""
        log.info("configuration reloaded from %s", path)
