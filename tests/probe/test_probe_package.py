"""The package builds as a wheel (the way the role's artifact is made) with its console script and licence."""

import pathlib
import shutil
import subprocess
import sys
import zipfile

from .probe_lab import REPO


def test_wheel_builds_with_console_script_and_licence(tmp_path):
    # build from a copy: setuptools leaves build/ and *.egg-info next to the sources
    source = tmp_path / "probe"
    shutil.copytree(REPO / "probe", source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = pathlib.Path(tmp_path).glob("infra_obs_probe-*-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = z.read(info).decode()
        entry_points = z.read(info.replace("METADATA", "entry_points.txt")).decode()
    assert "infra_obs_probe/engine.py" in names and "infra_obs_probe/icmp.py" in names
    assert "License-Expression: GPL-3.0-or-later" in metadata
    assert any(n.endswith("licenses/COPYING") for n in names)
    requires = sorted(
        line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist")
    )
    assert requires == [
        "PyYAML>=6",
        'grpcio-health-checking>=1.60; extra == "grpc"',
        'grpcio>=1.60; extra == "grpc"',
        "prometheus-client>=0.17",
        "py-consul>=1.5",
    ]
    assert "infra-obs-probe = infra_obs_probe.cli:main" in entry_points
    assert "infra-obs-quality = infra_obs_probe.quality.cli:main" in entry_points
