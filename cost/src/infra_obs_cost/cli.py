"""`infra-obs-cost collect|serve|migrate|validate|findings`: one collection run (the timer's), the health exporter
(a service), the schema brought up to date, the configuration only validated (the role's `validate:`), or the stored
findings of a team as JSON (module infra.obs.cost_findings reads them so)."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys

from infra_obs_probe.config import ConfigError
from infra_obs_probe.quality.config import read_yaml

from . import __version__
from .config import load
from .findings import Prices, parse_policy, parse_prices
from .model import TEAM
from .report import ReportError
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


def validate(args: argparse.Namespace) -> int:
    """The role's `validate:` of each file it writes: the config (with the files it names), a policy, a price table."""
    if args.policy:
        parse_policy(read_yaml(args.policy), args.policy, Prices())
    elif args.prices:
        parse_prices(read_yaml(args.prices), args.prices)
    else:
        load(args.config)
    print(f"{args.config or args.policy or args.prices}: OK")
    return 0


def serve(args: argparse.Namespace) -> int:
    from .serve import serve as run  # noqa: PLC0415

    return run(load(args.config))


def findings(args: argparse.Namespace) -> int:
    if args.team and not TEAM.fullmatch(args.team):
        print(f"infra-obs-cost: --team {args.team!r} is not a team name", file=sys.stderr)
        return INVALID
    with Store(load(args.config).database) as store:  # read-only: no migration (collect and migrate make tables)
        found = store.findings(args.team or None, args.window_end)
    json.dump({"findings": found}, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infra-obs-cost", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("collect", "collect the last days into the database, once"),
        ("serve", "export the collector's health as metrics and serve the reports, registered in Consul"),
        ("migrate", "apply the database migrations it lacks"),
        ("validate", "validate a configuration file"),
        ("findings", "print the stored findings (of the newest window, or --window-end's) as JSON"),
    ):
        sub.add_parser(name, help=text).add_argument("--config", required=name != "validate")
    alone = sub.choices["validate"].add_mutually_exclusive_group()
    alone.add_argument("--policy", help="validate this findings policy file (findings.yml) instead")
    alone.add_argument("--prices", help="validate this price table (prices.yml) instead")
    sub.choices["findings"].add_argument("--team", default="", help="one team's (default: every team's)")
    sub.choices["findings"].add_argument("--window-end", type=datetime.date.fromisoformat, help="YYYY-MM-DD")
    args = parser.parse_args(argv)
    if args.command == "validate" and not (args.config or args.policy or args.prices):
        parser.error("validate needs --config, --policy or --prices")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    commands = {"collect": collect, "serve": serve, "migrate": migrate, "validate": validate, "findings": findings}
    try:
        return commands[args.command](args)
    except ConfigError as e:
        print(f"infra-obs-cost: invalid configuration: {e}", file=sys.stderr)
        return INVALID
    except (SourceError, StoreError, ReportError) as e:
        print(f"infra-obs-cost: {e}", file=sys.stderr)
        return FAILED
