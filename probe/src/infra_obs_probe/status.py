"""Exporter-level state that the discovery thread and the main thread update and /metrics reads."""

import time


class Status:
    def __init__(self) -> None:
        self.config_ok = 1
        self.config_ok_time = time.time()
        self.config_error = ""
        self.discovery_success = 0
        self.discovery_last_success = 0.0
        self.discovery_failures = 0
        self.discovery_error = ""
        self.datacenters_read: dict[str, int] = {}  # 1 per datacenter whose catalog the last refresh read
        self.registered = 0
