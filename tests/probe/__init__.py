"""Tests of the infra-obs-probe exporter (probe/): a package, so its conftest does not shadow tests/conftest.py."""
