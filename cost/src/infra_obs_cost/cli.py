"""`infra-obs-cost collect|serve|migrate|validate`: one collection run (the timer's), the health exporter (a
service), the schema brought up to date, or the configuration only validated (the role's `validate:`)."""

from __future__ import annotations

import argparse
import logging
import sys

from infra_obs_probe.config import ConfigError

from . import __version__
from .config import load
from .sources import SourceError
from .store import Store, StoreError

# Exit statuses: the run failed (source or database); the configuration is invalid.
FAILED, INVALID = 1, 2


def collect(args: argparse.Namespace) -> int:
    from .collect import run  # noqa: PLC0415 (validate, the role's validate step, needs none of it)

    state = run(load(args.config))
    print(
        f"{state.days} days, {state.records} records ({state.records_added} added, {state.records_changed} changed), "
        f"{state.records_rejected} records rejected, {state.rejects} reject rows, {state.batches} batches, "
        f"{state.source_calls} source calls, {state.duration:.1f} s"
    )
    return 0


def migrate(args: argparse.Namespace) -> int:
    with Store(load(args.config).database) as store:
        applied = store.migrate()
    print(f"applied migrations: {', '.join(map(str, applied))}" if applied else "schema up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infra-obs-cost", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("collect", "collect the last days into the database, once"),
        ("serve", "export the collector's health (its last runs) as metrics, registered in Consul"),
        ("migrate", "apply the database migrations it lacks"),
        ("validate", "validate a configuration file"),
    ):
        sub.add_parser(name, help=text).add_argument("--config", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        if args.command == "collect":
            return collect(args)
        if args.command == "migrate":
            return migrate(args)
        if args.command == "validate":
            load(args.config)
            print(f"{args.config}: OK")
            return 0
        from .serve import serve  # noqa: PLC0415

        return serve(load(args.config))
    except ConfigError as e:
        print(f"infra-obs-cost: invalid configuration: {e}", file=sys.stderr)
        return INVALID
    except (SourceError, StoreError) as e:
        print(f"infra-obs-cost: {e}", file=sys.stderr)
        return FAILED
