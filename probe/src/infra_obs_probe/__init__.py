"""infra-obs-probe: a continuous ICMP, TCP and MTR network probe exporter for a Consul-discovered mesh."""

__version__ = "0.4.5"
