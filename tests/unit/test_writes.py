"""The writer: every write behind its fence, transient errors retried, conflicts left to the caller."""

from __future__ import annotations

import pytest

from changejob.domain import jobs
from changejob.kube import resources, transport, writes
from fake_kube import FakeTransport

pytestmark = pytest.mark.unit

OWNER = {"name": "nightly", "namespace": "ns", "uid": "u-1"}


def job() -> dict[str, object]:
    return dict(jobs.build_job(owner=OWNER, template={"spec": {}}, sequence=1, changed=[], hashes=[]))


def test_a_fenced_write_is_never_sent() -> None:
    api = FakeTransport()
    writer = writes.Writer(api)
    with pytest.raises(writes.Fenced):
        writer.create_job(job(), fence=lambda: False)  # type: ignore[arg-type]
    with pytest.raises(writes.Fenced):
        writer.delete_job(namespace="ns", name="x", fence=lambda: False)
    with pytest.raises(writes.Fenced):
        writer.event(OWNER, type_="Normal", reason="R", message="m", fence=lambda: False)
    writer.flush_events()
    assert api.requests == []


def test_transient_errors_are_retried_and_conflicts_are_not() -> None:
    api = FakeTransport()
    writer = writes.Writer(api)
    api.fail("POST", resources.JOB.path("ns"), transport.ApiError(503, "ServiceUnavailable", "later"))
    created = writer.create_job(job(), fence=writes.unfenced)  # type: ignore[arg-type]
    assert created["metadata"]["uid"] and len(api.sent("POST")) == 2
    with pytest.raises(transport.ApiError) as raised:
        writer.create_job(job(), fence=writes.unfenced)  # type: ignore[arg-type]
    assert raised.value.already_exists and len(api.sent("POST")) == 3
