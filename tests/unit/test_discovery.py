"""Discovery: kinds resolved from the server's resource lists, cached, refreshed on a miss at most
every ``refresh_interval``, and one fetch for any number of workers missing the same group-version."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from changejob.kube import discovery, resources
from fake_kube import FakeTransport

pytestmark = pytest.mark.unit

CONFIGMAPS = resources.ResourceType(group="", version="v1", kind="ConfigMap", plural="configmaps", namespaced=True)
WIDGETS = resources.ResourceType(group="example.com", version="v1", kind="Widget", plural="widgets", namespaced=False)


class Clock:
    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


def test_kinds_are_cached_and_a_missing_kind_is_looked_up_again_after_the_interval() -> None:
    api, clock = FakeTransport(), Clock()
    api.serve(CONFIGMAPS)
    found = discovery.Discovery(api, refresh_interval=5.0, clock=clock)
    assert found.resolve(api_version="v1", kind="ConfigMap") == CONFIGMAPS
    assert found.resolve(api_version="v1", kind="ConfigMap") == CONFIGMAPS
    assert found.resolve(api_version="example.com/v1", kind="Widget") is None
    assert len(api.sent("GET")) == 2
    api.serve(WIDGETS)  # its CRD is installed
    clock.now += 4.9
    assert found.resolve(api_version="example.com/v1", kind="Widget") is None
    clock.now += 0.1
    assert found.resolve(api_version="example.com/v1", kind="Widget") == WIDGETS
    assert [r.path for r in api.sent("GET")] == ["/api/v1", "/apis/example.com/v1", "/apis/example.com/v1"]


class SlowDiscovery(FakeTransport):
    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        if path in ("/api/v1", "/apis/apps/v1"):
            time.sleep(0.2)
        return super().request(method, path, **kwargs)


def test_workers_missing_one_group_version_at_once_share_one_fetch() -> None:
    api = SlowDiscovery()
    api.serve(CONFIGMAPS)
    found = discovery.Discovery(api)
    answers: list[resources.ResourceType | None] = []
    workers = [
        threading.Thread(target=lambda: answers.append(found.resolve(api_version="v1", kind="ConfigMap")))
        for _ in range(8)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(5)
    assert answers == [CONFIGMAPS] * 8
    assert len(api.sent("GET")) == 1
