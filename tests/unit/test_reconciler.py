"""The reconciler and its executor against an in-memory API server: triggers, adoption, conflicts, fencing.

The pieces are the real ones (stores, subscriptions, writer, discovery, controller); only the API
server is ``fake_kube.FakeTransport`` and the streams are fed by hand.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from changejob.domain import api, conditions, hashing, jobs
from changejob.kube import discovery, resources, transport, writes
from changejob.runtime import controller, executor, queue, reconciler, stores, subscriptions
from changejob.telemetry import metrics
from fake_kube import FakeTransport

pytestmark = pytest.mark.unit

NS = "team-a"
CONFIGMAPS = resources.ResourceType(group="", version="v1", kind="ConfigMap", plural="configmaps", namespaced=True)
KEY = (NS, "nightly")


class World:
    def __init__(self) -> None:
        self.api = FakeTransport()
        self.api.serve(CONFIGMAPS)
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
        self.seconds = itertools.count()
        self.owned = True
        self.allowed = True
        self.woken: list[tuple[str, str]] = []
        self.ctjs = stores.CtjStore(notify=self.woken.append, accept=lambda key: self.owned)
        self.jobs = stores.JobIndex(notify=self.woken.append)
        self.subs = subscriptions.Subscriptions(
            transport_=self.api, notify=self.woken.append, hash_key=None, start=False
        )
        self.writer = writes.Writer(self.api)
        self.executor = executor.Executor(
            writer=self.writer,
            discovery_=discovery.Discovery(self.api),
            ctjs=self.ctjs,
            job_index=self.jobs,
            subscriptions_=self.subs,
            may_act=lambda key: self.allowed,
        )
        self.reconciler = reconciler.Reconciler(
            ctjs=self.ctjs,
            job_index=self.jobs,
            subscriptions_=self.subs,
            executor_=self.executor,
            owns=lambda key: self.owned,
            clock=lambda: self.now,
        )

    def apply(self, *names: str, **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": KEY[1], "namespace": NS},
            "spec": {
                "resources": [{"apiVersion": "v1", "kind": "ConfigMap", "name": n, "namespace": NS} for n in names],
                "cooldown": "0s",
                "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}},
                **spec,
            },
        }
        stored = self.api.add(resources.CTJ, body)
        self.ctjs.event("ADDED", stored)
        return stored

    def configmaps(self, *objs: tuple[str, str]) -> None:
        """The ConfigMap stream lists ``(name, value)`` objects."""
        stream = self.subs.stream(CONFIGMAPS, NS)
        assert stream is not None
        stream.begin_sync()
        for name, value in objs:
            stream.synced_object(configmap(name, value))
        stream.end_sync()

    def change(self, name: str, value: str) -> None:
        stream = self.subs.stream(CONFIGMAPS, NS)
        assert stream is not None
        stream.event("MODIFIED", configmap(name, value))

    def ctj(self) -> dict[str, Any]:
        found = self.api.get(resources.CTJ, NS, KEY[1])
        assert found is not None
        return found

    def created_jobs(self) -> list[dict[str, Any]]:
        return self.api.all(resources.JOB)

    def events(self) -> list[str]:
        self.writer.flush_events()
        return [r.body["reason"] for r in self.api.sent("POST", resources.EVENT.path(NS))]

    def baseline(self, *objs: tuple[str, str], **spec: Any) -> None:
        self.apply(*(name for name, _ in objs), **spec)
        assert self.reconciler.reconcile(KEY) == controller.Result()  # subscribes; the stream is listing
        self.configmaps(*objs)
        self.reconciler.reconcile(KEY)
        assert self.ctj()["status"]["resourceHashes"][0]["lastTriggeredHash"]


def configmap(name: str, value: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS, "resourceVersion": "1"}, "data": {"k": value}}


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    yield w
    w.subs.stop()


def count(result: str) -> float:
    value: float = metrics.triggers_total.labels(result=result)._value.get()
    return value


# --- the happy path ------------------------------------------------------------------------------------


def test_a_change_becomes_one_job_and_a_status_that_covers_it(world: World) -> None:
    world.baseline(("cfg", "v1"))
    assert world.events() == ["BaselineRecorded"]
    assert world.created_jobs() == []
    world.change("cfg", "v2")
    assert world.reconciler.reconcile(KEY) == controller.Result()
    (job,) = world.created_jobs()
    status = world.ctj()["status"]
    assert (
        job["metadata"]["name"]
        == status["lastJobName"]
        == jobs.job_name(ctj_name=KEY[1], ctj_uid=world.ctj()["metadata"]["uid"], sequence=1)
    )
    assert status["triggerCount"] == 1 and status["resourceHashes"][0]["changed"] is False
    assert world.events() == ["BaselineRecorded", "ChangeDetected", "JobCreated"]
    assert [j.name for j in world.jobs.jobs_of(KEY)] == [job["metadata"]["name"]]
    world.reconciler.reconcile(KEY)  # nothing new: no request at all
    assert len(world.created_jobs()) == 1


def test_until_its_streams_have_listed_a_ctj_waits(world: World) -> None:
    world.apply("cfg")
    assert world.reconciler.reconcile(KEY) == controller.Result()
    assert world.api.sent("PUT") == [] and world.api.sent("POST", resources.JOB.path(NS)) == []


# --- adoption ------------------------------------------------------------------------------------------


def test_an_existing_job_is_adopted_on_already_exists(world: World) -> None:
    """Another replica (or an attempt whose answer was lost) created the trigger's Job for v2 already;
    v3 is observed now. The Job is adopted, not duplicated, and v3 still triggers the next Job."""
    world.baseline(("cfg", "v1"))
    meta = world.ctj()["metadata"]
    older = jobs.build_job(owner=meta, template={"spec": {}}, sequence=1, changed=["x"], hashes=[hashed("v2")])
    world.api.add(resources.JOB, older)
    skipped = count("skipped")
    world.change("cfg", "v3")
    world.reconciler.reconcile(KEY)
    assert len(world.created_jobs()) == 1
    status = world.ctj()["status"]
    assert status["triggerCount"] == 1 and status["lastJobName"] == older["metadata"]["name"]
    assert status["resourceHashes"][0]["lastTriggeredHash"] == hashed("v2")
    assert status["lastTriggeredTime"] == "2026-01-01T00:00:00.000000Z"  # the Job's creation
    assert count("skipped") - skipped == 1
    world.reconciler.reconcile(KEY)  # v3 was not covered
    assert len(world.created_jobs()) == 2 and world.ctj()["status"]["triggerCount"] == 2


def test_a_job_of_that_name_owned_by_someone_else_is_not_adopted(world: World) -> None:
    world.baseline(("cfg", "v1"))
    meta = dict(world.ctj()["metadata"], uid="another-ctj")
    name = jobs.job_name(ctj_name=KEY[1], ctj_uid=world.ctj()["metadata"]["uid"], sequence=1)
    foreign = jobs.build_job(owner=meta, template={"spec": {}}, sequence=1, changed=[], hashes=[])
    foreign["metadata"]["name"] = name
    world.api.add(resources.JOB, foreign)
    world.change("cfg", "v2")
    with pytest.raises(transport.ApiError) as raised:
        world.reconciler.reconcile(KEY)
    assert raised.value.already_exists
    assert world.ctj()["status"]["triggerCount"] == 0


def hashed(value: str) -> str:
    return hashing.ObjectHasher(fields=api.DEFAULT_FIELDS).digests(configmap("cfg", value)).partition(" ")[0]


# --- conflicts: retried by the controller after a fresh read ----------------------------------------------


def test_a_status_write_conflict_is_retried_after_a_fresh_read_without_a_second_job(world: World) -> None:
    world.baseline(("cfg", "v1"))
    # Someone edits the CTJ (a label) after the store last saw it: our resourceVersion is stale.
    edited = world.ctj()
    edited["metadata"]["labels"] = {"edited": "yes"}
    world.api.request("PUT", resources.CTJ.path(NS, KEY[1]), body=edited)
    clock = Clock()
    work: queue.WorkQueue[tuple[str, str]] = queue.WorkQueue(clock=clock)
    ctl = controller.Controller(work=work, reconcile=world.reconciler.reconcile, clock=clock)
    created = count("created")
    world.change("cfg", "v2")
    work.add(KEY)
    ctl.process_one(timeout=0)  # Job created, status write conflicts, the CTJ is read afresh
    assert len(world.created_jobs()) == 1 and world.ctj()["status"]["triggerCount"] == 0
    assert world.ctjs.get(KEY)["metadata"]["labels"] == {"edited": "yes"}  # type: ignore[index]
    clock.now += 0.005  # a conflict comes back at once
    assert ctl.process_one(timeout=0)
    assert len(world.created_jobs()) == 1  # the retry adopted the Job it had created
    status = world.ctj()["status"]
    assert status["triggerCount"] == 1 and status["resourceHashes"][0]["lastTriggeredHash"] == hashed("v2")
    assert count("created") - created == 1


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


# --- fencing ---------------------------------------------------------------------------------------------


def test_nothing_is_written_once_the_replica_may_no_longer_act(world: World) -> None:
    world.baseline(("cfg", "v1"))
    sent = len(world.api.requests)
    world.allowed = False
    world.change("cfg", "v2")
    with pytest.raises(writes.Fenced):
        world.reconciler.reconcile(KEY)
    assert [r for r in world.api.requests[sent:] if r.method != "GET"] == []
    assert world.created_jobs() == []


def test_a_ctj_no_longer_owned_is_forgotten(world: World) -> None:
    world.baseline(("cfg", "v1"))
    world.owned = False
    assert world.reconciler.reconcile(KEY) == controller.Result()
    assert world.subs.observed(KEY) is None  # unsubscribed
    assert world.subs.stream(CONFIGMAPS, NS) is None


# --- what cannot be acted on --------------------------------------------------------------------------------


def test_an_invalid_spec_is_reported_and_not_watched(world: World) -> None:
    world.baseline(("cfg", "v1"))
    body = world.ctj()
    body["spec"]["cooldown"] = "soon"
    body["metadata"]["generation"] = 2
    world.ctjs.put(world.api.request("PUT", resources.CTJ.path(NS, KEY[1]), body=body))
    assert world.reconciler.reconcile(KEY) == controller.Result()
    degraded = conditions.get_condition(world.ctj()["status"]["conditions"], "Degraded")
    assert degraded is not None and degraded["reason"] == "InvalidSpec"
    assert "spec.cooldown" in degraded["message"]
    assert world.subs.stream(CONFIGMAPS, NS) is None
    assert world.events()[-1] == "InvalidSpec"


def test_a_kind_that_is_not_served_is_looked_up_again_later(world: World) -> None:
    world.apply("cfg")
    body = world.ctj()
    body["spec"]["resources"][0]["kind"] = "Widget"
    world.ctjs.put(body)
    assert world.reconciler.reconcile(KEY) == controller.Result(requeue_after=30.0)
    ready = conditions.get_condition(world.ctj()["status"]["conditions"], "Ready")
    assert ready is not None and "resource kind does not exist: Widget (v1)" in ready["message"]


# --- pruning ---------------------------------------------------------------------------------------------


def test_old_finished_jobs_beyond_history_are_deleted(world: World) -> None:
    world.baseline(("cfg", "v1"), history=2)
    meta = world.ctj()["metadata"]
    for sequence in (1, 2):
        done = jobs.build_job(owner=meta, template={"spec": {}}, sequence=sequence, changed=[], hashes=[])
        done["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
        world.jobs.record(world.api.add(resources.JOB, done))
    world.ctjs.put({**world.ctj(), "status": {**world.ctj()["status"], "triggerCount": 2}})
    world.change("cfg", "v2")
    world.now += timedelta(seconds=1)
    world.reconciler.reconcile(KEY)
    deleted = [r.path.rsplit("/", 1)[1] for r in world.api.sent("DELETE")]
    assert deleted == [jobs.job_name(ctj_name=KEY[1], ctj_uid=meta["uid"], sequence=1)]
    assert world.events()[-1] == "JobsPruned"
