#!/usr/bin/env python3
"""Package the Helm chart for a release, with the image it must run pinned by digest.

The release workflow (.github/workflows/release.yml) and the publishing test
(tests/integration/test_publish.py) both package the chart with this script, so the test exercises
what a release does:

    tools/release.py package-chart --version 0.1.0 --image ghcr.io/OWNER/kube-changejob \\
        --digest sha256:... --out .packaged [--helm PATH]

It copies chart/ aside, writes ``image.repository`` and ``image.digest`` into that copy's values.yaml
(comments and order kept), runs ``helm package --version V --app-version V`` and checks with ``helm
template`` that the packaged chart deploys exactly ``IMAGE@DIGEST``. It prints the package's path.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
REPOSITORY = re.compile(r"[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*")


def set_image(values: str, *, repository: str, digest: str) -> str:
    """values.yaml text with ``image.repository`` and ``image.digest`` replaced, nothing else touched."""
    if not DIGEST.fullmatch(digest):
        raise ValueError(f"not an image digest: {digest!r} (expected sha256:<64 hex digits>)")
    if not REPOSITORY.fullmatch(repository):
        raise ValueError(f"not an image repository: {repository!r}")
    block = re.search(r"^image:\n((?:[ \t]+.*\n|[ \t]*\n)+)", values, re.MULTILINE)
    if block is None:
        raise ValueError("values.yaml has no top-level image: block")
    body = block.group(1)
    for key, value in (("repository", repository), ("digest", f'"{digest}"')):
        body, count = re.subn(rf"^(  {key}:)[^\n]*$", rf"\g<1> {value}", body, count=1, flags=re.MULTILINE)
        if count != 1:
            raise ValueError(f"values.yaml has no image.{key}")
    return values[: block.start(1)] + body + values[block.end(1) :]


def package_chart(*, version: str, image: str, digest: str, out: Path, helm: str, chart: Path = REPO / "chart") -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "kube-changejob"
        shutil.copytree(chart, copy)
        values = copy / "values.yaml"
        values.write_text(set_image(values.read_text(encoding="utf-8"), repository=image, digest=digest))
        _run(helm, "lint", "--strict", str(copy))
        _run(helm, "package", str(copy), "--version", version, "--app-version", version, "--destination", str(out))
    packaged = out / f"kube-changejob-{version}.tgz"
    rendered = _run(helm, "template", "release-check", str(packaged), "--namespace", "release-check")
    images = set(re.findall(r"^\s+image: \"?([^\s\"]+)\"?$", rendered, re.MULTILINE))
    if images != {f"{image}@{digest}"}:
        raise SystemExit(f"the packaged chart deploys {sorted(images)}, not {image}@{digest}")
    return packaged


def _run(*args: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    package = sub.add_parser("package-chart", help="package the chart with the image digest")
    package.add_argument("--version", required=True, help="chart version and appVersion (no leading v)")
    package.add_argument("--image", required=True, help="image repository, e.g. ghcr.io/owner/kube-changejob")
    package.add_argument("--digest", required=True, help="the pushed image's digest, sha256:...")
    package.add_argument("--out", required=True, type=Path, help="directory for the .tgz")
    package.add_argument("--helm", default=shutil.which("helm") or "helm", help="helm binary")
    args = parser.parse_args(argv)
    try:
        path = package_chart(version=args.version, image=args.image, digest=args.digest, out=args.out, helm=args.helm)
    except ValueError as exc:
        parser.error(str(exc))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
