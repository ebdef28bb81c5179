"""How API requests are named in ``changejob_api_requests_total`` (the API server's verbs)."""

from __future__ import annotations

import pytest

from changejob.kube import resources, watch
from changejob.kube.transport import verb_and_resource
from fake_kube import FakeTransport


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/api/v1/namespaces/a/configmaps", ("list", "configmaps")),
        ("GET", "/api/v1/namespaces/a/configmaps/x", ("get", "configmaps")),
        ("GET", "/apis/batch/v1/jobs", ("list", "jobs")),
        ("GET", "/apis/triggers.changejob.dev/v1alpha/changetriggeredjobs", ("list", "changetriggeredjobs")),
        (
            "PUT",
            "/apis/triggers.changejob.dev/v1alpha/namespaces/a/changetriggeredjobs/x/status",
            ("update", "changetriggeredjobs/status"),
        ),
        ("POST", "/api/v1/namespaces/a/events", ("create", "events")),
        ("DELETE", "/apis/batch/v1/namespaces/a/jobs/j?propagationPolicy=Background", ("delete", "jobs")),
        ("PATCH", "/api/v1/nodes/n1", ("patch", "nodes")),
        ("GET", "/api/v1/namespaces", ("list", "namespaces")),
        ("GET", "/api/v1/namespaces/foo", ("get", "namespaces")),
        ("GET", "/apis/coordination.k8s.io/v1/namespaces/o/leases/kube-changejob-shard-3", ("get", "leases")),
    ],
)
def test_verb_and_resource(method: str, path: str, expected: tuple[str, str]) -> None:
    assert verb_and_resource(method, path) == expected


def test_list_pages_follows_continue_and_passes_the_query() -> None:
    api = FakeTransport()
    for i in range(5):
        api.add(resources.JOB, {"metadata": {"name": f"j{i}", "namespace": "ns", "labels": {"owner": "x"}}})
    api.add(resources.JOB, {"metadata": {"name": "other", "namespace": "ns"}})
    pages = list(api.list_pages(resources.JOB.path("ns"), query={"labelSelector": "owner"}, page_size=2))
    assert [[o["metadata"]["name"] for o in page.items] for page in pages] == [["j0", "j1"], ["j2", "j3"], ["j4"]]
    assert [page.last for page in pages] == [False, False, True]
    assert pages[-1].resource_version is not None
    sent = [(r.query["limit"], r.query.get("continue"), r.query["labelSelector"]) for r in api.sent("GET")]
    assert sent == [(2, None, "owner"), (2, "2", "owner"), (2, "4", "owner")]


def test_a_relist_tells_what_it_did_not_return() -> None:
    relist: watch.Relist[str] = watch.Relist()
    relist.begin()
    relist.saw("a")
    assert relist.seen("a") and not relist.seen("b")
    assert relist.end(["a", "b", "c"]) == ["b", "c"]
    assert not relist.seen("a")  # forgotten at the end
    relist.begin()
    assert relist.end(["a"]) == ["a"]
