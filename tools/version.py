#!/usr/bin/env python3
"""The project's version, and a check that every place that states it agrees.

The one source is ``version`` in pyproject.toml (the Python package's version). The package reads it
back from its installed metadata (``changejob.__version__``: ``--version``, the traces'
``service.version``, ``changejob_build_info``); the chart must state it as ``version`` and
``appVersion``; the release workflow labels the image with what this script prints and refuses a tag
that is not ``v<version>``.

    tools/version.py                 print the version
    tools/version.py --check         check chart/Chart.yaml against it (exit 1 and say where not)
    tools/version.py --check --tag v0.1.0    also check a release tag
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def package_version(repo: Path = REPO) -> str:
    with (repo / "pyproject.toml").open("rb") as fh:
        version: str = tomllib.load(fh)["project"]["version"]
    return version


def chart_versions(repo: Path = REPO) -> dict[str, str]:
    """``version`` and ``appVersion`` of chart/Chart.yaml (top-level scalar keys, read without a YAML library)."""
    found: dict[str, str] = {}
    for line in (repo / "chart" / "Chart.yaml").read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"(version|appVersion):\s*[\"']?([^\"'#\s]+)[\"']?\s*(#.*)?", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def problems(*, repo: Path = REPO, tag: str | None = None) -> list[str]:
    """Every place that disagrees with the package version, as one line each."""
    version = package_version(repo)
    found = []
    for key, value in sorted(chart_versions(repo).items()):
        if value != version:
            found.append(f"chart/Chart.yaml {key} is {value}, pyproject.toml version is {version}")
    missing = {"version", "appVersion"} - set(chart_versions(repo))
    found += [f"chart/Chart.yaml has no {key}" for key in sorted(missing)]
    if tag is not None and tag != f"v{version}":
        found.append(f"tag {tag} is not v{version} (pyproject.toml version)")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="check the chart (and --tag) against the version")
    parser.add_argument("--tag", help="a release tag that must be v<version>")
    args = parser.parse_args(argv)
    if args.check or args.tag:
        found = problems(tag=args.tag)
        for line in found:
            print(f"version mismatch: {line}", file=sys.stderr)
        if found:
            return 1
    print(package_version())
    return 0


if __name__ == "__main__":
    sys.exit(main())
