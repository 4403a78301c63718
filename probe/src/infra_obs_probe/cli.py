"""`infra-obs-probe --config FILE [--check]`: run the exporter, or only validate its configuration."""

from __future__ import annotations

import argparse
import logging
import resource
import signal
import sys

from . import __version__
from .config import ConfigError, load


def _raise_file_limit() -> None:
    """Every TCP probe in flight holds a socket: allow as many as the hard limit does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infra-obs-probe", description=__doc__)
    parser.add_argument("--config", required=True, help="YAML configuration file")
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit (0 = valid)")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--version", action="version", version=__version__)
    args = parser.parse_args(argv)
    # A reload asked for before the configuration is read is answered by reading it: until the app has its handler,
    # SIGHUP must not end the process (its default action).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        config = load(args.config)
    except ConfigError as e:
        print(f"infra-obs-probe: invalid configuration: {e}", file=sys.stderr)
        return 1
    if args.check:
        print(f"{args.config}: configuration OK")
        return 0
    _raise_file_limit()
    from .app import App  # noqa: PLC0415 - --check (an Ansible validate step) should not pay for these imports

    return App(config).run()
