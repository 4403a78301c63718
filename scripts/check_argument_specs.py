"""Every role default is documented in meta/argument_specs.yml, and every documented option with a default
exists in defaults/main.yml (as prometheus.prometheus's CI checks). Prints each mismatch; exits 1 on any."""

import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent


def mismatches(role: pathlib.Path) -> list[str]:
    defaults_file = role / "defaults" / "main.yml"
    spec_file = role / "meta" / "argument_specs.yml"
    if not spec_file.exists():
        # Only files (roles/mm2 ships its exporter config and alert rules before its tasks exist): nothing to specify.
        if not (role / "tasks").exists() and not defaults_file.exists():
            return []
        return [f"{role.name}: {spec_file.relative_to(ROOT)} is missing"]
    defaults = yaml.safe_load(defaults_file.read_text()) or {} if defaults_file.exists() else {}
    options = yaml.safe_load(spec_file.read_text())["argument_specs"]["main"].get("options", {})
    problems = [
        f"{role.name}: default '{name}' in {defaults_file.relative_to(ROOT)} is not in argument_specs"
        for name in defaults
        if name not in options
    ]
    problems += [
        f"{role.name}: option '{name}' has a documented default but is not in {defaults_file.relative_to(ROOT)}"
        for name, spec in options.items()
        if "default" in spec and name not in defaults
    ]
    problems += [
        f"{role.name}: option '{name}' is required but has a value in {defaults_file.relative_to(ROOT)}"
        for name, spec in options.items()
        if spec.get("required") and defaults.get(name) not in (None, "", [], {}, 0)
    ]
    return problems


def main() -> int:
    problems = [p for role in sorted((ROOT / "roles").iterdir()) if role.is_dir() for p in mismatches(role)]
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
