"""High availability end to end: a short run of ``tools/faultloop.py``.

Three operator replicas with leader election on share the shards of a namespace while a replica is
SIGKILLed, another SIGTERMed, one SIGSTOPped for longer than the lease duration, the kube-apiserver
restarted, a replica added and one removed — and every ConfigMap change must still yield exactly one
Job. The run uses a kwok cluster of its own (``changejob-ha``), deleted afterwards, because restarting
the kube-apiserver of the shared test cluster would disturb everything else using it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
LEASE_DURATION = 4.0


@pytest.mark.timeout(600)
def test_every_change_yields_exactly_one_job_under_faults(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "faultloop.py"),
            "--quick",
            "--cluster",
            "changejob-ha",
            "--down",
            f"--lease-duration={LEASE_DURATION}",
            "--renew-deadline=3",
            "--retry-period=0.5",
            "--workdir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=580,
        check=False,
    )
    print(run.stdout)
    report = json.loads(run.stdout[run.stdout.index("\n{") + 1 : run.stdout.index("\n}") + 2])
    assert report["changes"] > 50
    assert report["duplicates"] == {}
    assert report["lost"] == {}
    assert report["bad_sequences"] == {}
    assert report["replicas_died_unasked"] == []
    assert report["jobs"] == report["changes"]
    # A SIGTERMed replica releases its shards: the handover does not wait for its Leases to expire.
    assert all(t < LEASE_DURATION for t in report["handover_s"]["SIGTERM"])
    # A SIGKILLed or SIGSTOPped one is replaced only once its member Lease has expired.
    assert all(t >= LEASE_DURATION - 1.0 for t in report["handover_s"]["SIGKILL"] + report["handover_s"]["SIGSTOP"])
    assert run.returncode == 0
