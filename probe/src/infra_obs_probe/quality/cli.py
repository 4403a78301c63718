"""`infra-obs-quality check|serve|validate`: the checks once as a gate (a table, JSON, non-zero on a failure), on a
schedule as a service, or only validated (the role's `validate:` of each check file)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from datetime import UTC, datetime

from .. import __version__
from ..config import ConfigError
from .config import load, parse_checks, read_yaml

# Exit statuses: a check failed; the configuration or a check file is invalid.
FAILED, INVALID = 1, 2


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def check(args: argparse.Namespace) -> int:
    from .checks import run_all, table  # noqa: PLC0415 - validate, the role's validate step, needs none of it

    config = load(args.config)
    checks = config.mine()
    if args.only:
        unknown = sorted(set(args.only) - {c.name for c in checks})
        if unknown:
            raise ConfigError(args.config, "--only", "names no check of this checker", unknown)
        checks = tuple(c for c in checks if c.name in args.only)
    start, started = _now(), time.time()
    results = run_all(config, checks)
    failed = [r for r in results if not r.ok]
    human = sys.stderr if args.json == "-" else sys.stdout  # standard output is the JSON's then
    print(table(results), file=human)
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed ({time.time() - started:.1f} s)", file=human)
    if args.json:
        data = {
            "checker": config.checker.name,
            "region": config.checker.region,
            "az": config.checker.az,
            "start": start,
            "end": _now(),
            "result": "failed" if failed else "success",
            "results": [r.as_dict() for r in results],
        }
        text = json.dumps(data, indent=2, sort_keys=True) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            with open(args.json, "w", encoding="utf-8") as f:
                f.write(text)
    return FAILED if failed else 0


def validate(args: argparse.Namespace) -> int:
    for path in args.files:
        if args.checks:
            parse_checks(read_yaml(path), path)
        else:
            load(path)
        print(f"{path}: OK")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infra-obs-quality", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="run this checker's checks once: a table, exit 1 if any failed")
    p.add_argument("--config", required=True)
    p.add_argument(
        "--json", help="also write the results as JSON to this file (-: standard output, the table to standard error)"
    )
    p.add_argument("--only", action="append", help="run only this check (repeatable)")
    p = sub.add_parser("serve", help="run the checks every interval and serve their results as metrics")
    p.add_argument("--config", required=True)
    p = sub.add_parser("validate", help="validate checker configurations, or check files with --checks")
    p.add_argument("--checks", action="store_true", help="the files are check files")
    p.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "serve":
        # A reload asked for before the configuration is read is answered by reading it: until serve() has its
        # handler, SIGHUP must not end the process (its default action).
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        if args.command == "check":
            return check(args)
        if args.command == "validate":
            return validate(args)
        from .serve import serve  # noqa: PLC0415

        return serve(load(args.config))
    except ConfigError as e:
        print(f"infra-obs-quality: invalid configuration: {e}", file=sys.stderr)
        return INVALID
