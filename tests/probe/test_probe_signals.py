"""SIGHUP reloads (a bad file is refused and the last good configuration keeps running); a stalled loop skips
the slots it missed instead of bursting."""

import signal
import time

import yaml

from .probe_lab import base_config, free_port, wait_for


def test_sighup_refuses_a_bad_config_and_applies_a_good_one(exporter):
    config = base_config(free_port(), interval=0.1, tcp={"enabled": False})
    config["targets"]["static"] = [{"name": "one", "address": "127.0.0.2"}]
    e = exporter(config)
    wait_for(lambda: e.sample("infra_obs_probe_received_total", target="127.0.0.2") >= 3, 5, what="probes")
    assert e.sample("infra_obs_probe_config_last_reload_successful") == 1

    bad = yaml.safe_load(yaml.safe_dump(config))
    bad["targets"]["static"].append({"name": "two", "address": "127.0.0.300"})
    e.write_config(bad)
    e.send_signal(signal.SIGHUP)
    wait_for(lambda: e.sample("infra_obs_probe_config_last_reload_successful") == 0, 5, what="reload refused")
    assert f"{e.config_path}: targets.static[1].address: is not an IPv4 address: four numbers 0-255" in e.log()
    assert '(got "127.0.0.300")' in e.log()
    before = e.sample("infra_obs_probe_sent_total", target="127.0.0.2")
    time.sleep(0.5)
    assert e.sample("infra_obs_probe_sent_total", target="127.0.0.2") > before  # still probing
    assert e.sample("infra_obs_probe_targets", source="static") == 1

    good = yaml.safe_load(yaml.safe_dump(config))
    good["targets"]["static"].append({"name": "two", "address": "127.0.0.3", "region": "r2", "az": "r2a"})
    new_port = free_port()
    good["listen"] = f"127.0.0.1:{new_port}"
    e.write_config(good)
    e.send_signal(signal.SIGHUP)
    e.base = f"http://127.0.0.1:{new_port}"
    wait_for(lambda: e.sample("infra_obs_probe_config_last_reload_successful") == 1, 5, what="reload accepted")
    wait_for(lambda: e.sample("infra_obs_probe_received_total", target="127.0.0.3", dst_az="r2a") >= 3, 5, what="new")
    assert e.sample("infra_obs_probe_targets", source="static") == 2
    # the role's reload handler looks for exactly this line
    assert b"\ninfra_obs_probe_config_last_reload_successful 1.0\n" in e.get("/metrics")
    assert e.sample("infra_obs_probe_sent_total", target="127.0.0.2") > before  # kept its counters
    assert e.stop() == 0


def test_a_stalled_loop_skips_missed_slots(exporter):
    config = base_config(free_port(), interval=0.2, timeout=0.1, tcp={"enabled": False})
    config["targets"]["static"] = [{"name": f"h{i}", "address": f"127.0.0.{i}"} for i in range(2, 7)]
    e = exporter(config)
    wait_for(lambda: e.sample("infra_obs_probe_sent_total") >= 10, 5, what="probes")
    e.send_signal(signal.SIGSTOP)
    time.sleep(1.5)
    e.send_signal(signal.SIGCONT)
    sent = e.sample("infra_obs_probe_sent_total")
    time.sleep(0.3)
    # 5 targets x ~7 missed slots each, counted; no burst of catch-up probes afterwards
    skipped = e.sample("infra_obs_probe_skipped_total", probe="icmp", reason="behind")
    assert 25 <= skipped <= 45, skipped
    assert e.sample("infra_obs_probe_sent_total") - sent <= 5 * 3
