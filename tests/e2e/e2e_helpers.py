"""Names and small types of the end-to-end suite (tests/e2e), shared by its conftest and tests."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess

import helpers

REPO = helpers.REPO_ROOT
REAL_NODE_SCRIPT = REPO / "tools" / "real-node.sh"
IMAGE_SCRIPT = REPO / "tools" / "image.sh"
VALUES = pathlib.Path(__file__).resolve().parent / "values-real-node.yaml"
NODE_NAME = "real-node-0"


def run_tool(*args: str | pathlib.Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run one of the tools/ scripts on this session's cluster directory; output captured as text."""
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "CLUSTER_DIR": str(helpers.CLUSTER_DIR)},
    )


@dataclasses.dataclass(frozen=True)
class RealNode:
    """The real node of the session's cluster."""

    name: str
    cluster: helpers.Cluster


@dataclasses.dataclass(frozen=True)
class Namespaces:
    """The namespaces of one test module: the release's, the guide's (real node), the load's (kwok)."""

    operator: str
    guide: str
    load: str
