"""Job names, Job bodies, Job phases and the pruning plan."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changejob.domain import api, jobs

pytestmark = pytest.mark.unit

RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
UID = "3f2a0c8e-7b1d-4e5f-9a6b-1c2d3e4f5a6b"


# ---------------------------------------------------------------------------------------------
# job_name


def test_job_name_shape_and_suffix() -> None:
    name = jobs.job_name(ctj_name="my-first-trigger", ctj_uid=UID, sequence=1)
    prefix, suffix = name.rsplit("-", 1)
    assert prefix == "my-first-trigger"
    assert len(suffix) == 10
    assert re.fullmatch(r"[0-9a-z]{10}", suffix)
    assert int(suffix, 36) == xxhash.xxh3_64_intdigest(f"{UID}/1".encode()) % 36**10


def test_job_name_is_deterministic_and_varies_with_sequence_and_uid() -> None:
    one = jobs.job_name(ctj_name="t", ctj_uid=UID, sequence=1)
    assert jobs.job_name(ctj_name="t", ctj_uid=UID, sequence=1) == one
    assert jobs.job_name(ctj_name="t", ctj_uid=UID, sequence=2) != one
    assert jobs.job_name(ctj_name="t", ctj_uid="another-uid", sequence=1) != one


def test_job_name_for_a_253_character_ctj_name() -> None:
    ctj_name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    assert len(ctj_name) == 253
    name = jobs.job_name(ctj_name=ctj_name, ctj_uid=UID, sequence=7)
    assert len(name) <= 63
    assert DNS_LABEL.fullmatch(name), name
    assert name.startswith("a" * 52 + "-")


def test_job_name_strips_separators_left_by_truncation() -> None:
    ctj_name = "a" * 51 + "-.-" + "b" * 20
    name = jobs.job_name(ctj_name=ctj_name, ctj_uid=UID, sequence=1)
    assert name.startswith("a" * 51 + "-")
    assert name.count("-") == 1
    assert DNS_LABEL.fullmatch(name)


def test_job_name_replaces_dots() -> None:
    name = jobs.job_name(ctj_name="config.sync", ctj_uid=UID, sequence=3)
    assert name.startswith("config-sync-")
    assert DNS_LABEL.fullmatch(name)


@RELAXED
@given(
    ctj_name=st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", fullmatch=True),
    uid=st.uuids().map(str),
    sequence=st.integers(0, 2**40),
)
def test_job_names_are_valid_dns_labels(ctj_name: str, uid: str, sequence: int) -> None:
    name = jobs.job_name(ctj_name=ctj_name, ctj_uid=uid, sequence=sequence)
    assert len(name) <= 63
    assert DNS_LABEL.fullmatch(name), name


@RELAXED
@given(
    uid=st.uuids().map(str),
    sequences=st.lists(st.integers(0, 10**9), min_size=2, max_size=50, unique=True),
)
def test_distinct_sequences_give_distinct_names(uid: str, sequences: list[int]) -> None:
    names = {jobs.job_name(ctj_name="trigger", ctj_uid=uid, sequence=s) for s in sequences}
    assert len(names) == len(sequences)


# ---------------------------------------------------------------------------------------------
# build_job


def ctj() -> dict[str, Any]:
    return {
        "apiVersion": "triggers.changejob.dev/v1alpha",
        "kind": "ChangeTriggeredJob",
        "metadata": {"name": "config-sync", "namespace": "production", "uid": UID, "labels": {"team": "x"}},
        "spec": {
            "jobTemplate": {
                "metadata": {
                    "labels": {"app": "sync", jobs.OWNER_LABEL: "someone-else"},
                    "annotations": {"description": "sync config"},
                },
                "spec": {
                    "backoffLimit": 3,
                    "template": {
                        "spec": {
                            "containers": [{"name": "sync", "image": "config-sync-tool:v1.0"}],
                            "restartPolicy": "Never",
                        }
                    },
                },
            },
            "resources": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "app-config"}],
        },
    }


def build(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "ctj": ctj(),
        "sequence": 4,
        "changed": ["ConfigMap/production/app-config:data", "Secret/production/creds:*"],
        "hashes": ["a" * 32, "b" * 32],
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    } | overrides
    source = arguments.pop("ctj")
    built = jobs.build_job(owner=source["metadata"], template=source["spec"]["jobTemplate"], **arguments)
    return dict(built)


def test_build_job() -> None:
    job = build()
    assert job["apiVersion"] == "batch/v1"
    assert job["kind"] == "Job"
    metadata = job["metadata"]
    assert metadata["name"] == jobs.job_name(ctj_name="config-sync", ctj_uid=UID, sequence=4)
    assert metadata["namespace"] == "production"
    assert metadata["labels"] == {"app": "sync", "changejob.dev/owner": "config-sync"}
    assert metadata["annotations"] == {
        "description": "sync config",
        "changejob.dev/trigger": "4",
        "changejob.dev/changed": "ConfigMap/production/app-config:data,Secret/production/creds:*",
        "changejob.dev/hashes": "a" * 32 + "," + "b" * 32,
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    assert metadata["ownerReferences"] == [
        {
            "apiVersion": "triggers.changejob.dev/v1alpha",
            "kind": "ChangeTriggeredJob",
            "name": "config-sync",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert job["spec"] == ctj()["spec"]["jobTemplate"]["spec"]
    assert set(job) == {"apiVersion", "kind", "metadata", "spec"}


def test_build_job_without_traceparent_or_template_metadata() -> None:
    source = ctj()
    del source["spec"]["jobTemplate"]["metadata"]
    job = build(ctj=source, traceparent=None, changed=[], hashes=[])
    assert job["metadata"]["labels"] == {"changejob.dev/owner": "config-sync"}
    assert job["metadata"]["annotations"] == {
        "changejob.dev/trigger": "4",
        "changejob.dev/changed": "",
        "changejob.dev/hashes": "",
    }


def test_build_job_never_modifies_or_shares_its_input() -> None:
    source = ctj()
    before = copy.deepcopy(source)
    job = build(ctj=source)
    assert source == before
    job["spec"]["template"]["spec"]["containers"][0]["image"] = "changed"
    job["metadata"]["labels"]["x"] = "y"
    job["metadata"]["annotations"]["x"] = "y"
    assert source == before


def test_build_job_is_deterministic() -> None:
    assert build() == build()
    assert build(sequence=5)["metadata"]["name"] != build()["metadata"]["name"]


@pytest.mark.parametrize("missing", ["name", "namespace", "uid"])
def test_build_job_needs_name_namespace_and_uid(missing: str) -> None:
    source = ctj()
    del source["metadata"][missing]
    with pytest.raises(ValueError, match=f"metadata.{missing}"):
        build(ctj=source)


def test_build_job_refuses_a_name_that_cannot_be_a_label_value() -> None:
    source = ctj()
    source["metadata"]["name"] = "x" * (api.MAX_NAME_LENGTH + 1)
    with pytest.raises(ValueError, match="at most 63 characters"):
        build(ctj=source)


# ---------------------------------------------------------------------------------------------
# job_phase


def job(
    name: str,
    *,
    sequence: int | None = None,
    created: str | None = "2024-05-01T12:00:00Z",
    conditions: list[tuple[str, str]] = (),  # type: ignore[assignment]
    deleting: bool = False,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "annotations": {}}
    if sequence is not None:
        metadata["annotations"][jobs.TRIGGER_ANNOTATION] = str(sequence)
    if created is not None:
        metadata["creationTimestamp"] = created
    if deleting:
        metadata["deletionTimestamp"] = "2024-05-02T00:00:00Z"
    return {
        "metadata": metadata,
        "status": {"conditions": [{"type": t, "status": s} for t, s in conditions]},
    }


@pytest.mark.parametrize(
    ("conditions", "phase"),
    [
        ([], "Active"),
        ([("Complete", "True")], "Succeeded"),
        ([("SuccessCriteriaMet", "True")], "Succeeded"),
        ([("SuccessCriteriaMet", "True"), ("Complete", "True")], "Succeeded"),
        ([("Failed", "True")], "Failed"),
        ([("FailureTarget", "True")], "Failed"),
        ([("FailureTarget", "True"), ("Failed", "True")], "Failed"),
        ([("Complete", "False")], "Active"),
        ([("Failed", "False"), ("Suspended", "True")], "Active"),
    ],
)
def test_job_phase(conditions: list[tuple[str, str]], phase: str) -> None:
    assert jobs.job_phase(job("j", conditions=conditions)) == phase


def test_job_phase_without_status() -> None:
    assert jobs.job_phase({"metadata": {"name": "j"}}) == "Active"
    assert jobs.job_phase({"metadata": {"name": "j"}, "status": {}}) == "Active"


# ---------------------------------------------------------------------------------------------
# prune_plan


def views(found: list[dict[str, Any]]) -> list[jobs.JobView]:
    return [jobs.view(j) for j in found]


DONE = [("Complete", "True")]
FAILED = [("Failed", "True")]


def test_prune_keeps_the_newest_history() -> None:
    history = [job(f"j{i}", sequence=i, conditions=DONE) for i in range(1, 8)]
    assert sorted(jobs.prune_plan(jobs=views(history), history=5)) == ["j1", "j2"]
    assert jobs.prune_plan(jobs=views(history), history=7) == []
    assert jobs.prune_plan(jobs=views(history), history=10) == []


def test_prune_orders_by_trigger_number_not_text() -> None:
    history = [job("nine", sequence=9, conditions=DONE), job("ten", sequence=10, conditions=DONE)]
    assert jobs.prune_plan(jobs=views(history), history=1) == ["nine"]


def test_prune_never_deletes_an_active_job() -> None:
    history = [
        job("old-running", sequence=1),
        job("old-done", sequence=2, conditions=DONE),
        job("old-failed", sequence=3, conditions=FAILED),
        job("new", sequence=4, conditions=DONE),
    ]
    assert jobs.prune_plan(jobs=views(history), history=1) == ["old-failed", "old-done"]


def test_prune_ties_fall_back_to_creation_time_then_name() -> None:
    history = [
        job("b", sequence=1, created="2024-05-01T12:00:00Z", conditions=DONE),
        job("a", sequence=1, created="2024-05-01T12:00:01Z", conditions=DONE),
        job("c", sequence=1, created="2024-05-01T12:00:00Z", conditions=DONE),
    ]
    assert jobs.prune_plan(jobs=views(history), history=1) == ["c", "b"]


def test_prune_treats_jobs_without_a_trigger_number_as_oldest() -> None:
    history = [
        job("numbered", sequence=1, conditions=DONE),
        job("foreign", conditions=DONE),
        job("garbled", conditions=DONE),
    ]
    history[2]["metadata"]["annotations"][jobs.TRIGGER_ANNOTATION] = "x"
    history[1]["metadata"]["creationTimestamp"] = "2030-01-01T00:00:00Z"
    assert jobs.prune_plan(jobs=views(history), history=1) == ["foreign", "garbled"]


def test_prune_ignores_jobs_already_being_deleted() -> None:
    history = [
        job("j1", sequence=1, conditions=DONE),
        job("j2", sequence=2, conditions=DONE, deleting=True),
        job("j3", sequence=3, conditions=DONE),
    ]
    assert jobs.prune_plan(jobs=views(history), history=1) == ["j1"]


def test_prune_with_missing_or_bad_creation_time() -> None:
    history = [
        job("a", sequence=1, created=None, conditions=DONE),
        job("b", sequence=1, created="yesterday", conditions=DONE),
        job("c", sequence=1, conditions=DONE),
    ]
    assert jobs.prune_plan(jobs=views(history), history=1) == ["b", "a"]


def test_prune_rejects_negative_history() -> None:
    with pytest.raises(ValueError, match="history"):
        jobs.prune_plan(jobs=[], history=-1)


@st.composite
def job_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(0, 12))
    sequences = draw(st.lists(st.integers(1, 20), min_size=count, max_size=count))
    phases = draw(st.lists(st.sampled_from([[], DONE, FAILED]), min_size=count, max_size=count))
    return [
        job(f"job-{index}", sequence=sequence, conditions=phase)
        for index, (sequence, phase) in enumerate(zip(sequences, phases, strict=True))
    ]


@RELAXED
@given(history=st.integers(0, 8), found=job_sets())
def test_prune_plan_properties(history: int, found: list[dict[str, Any]]) -> None:
    plan = jobs.prune_plan(jobs=views(found), history=history)
    by_name = {j["metadata"]["name"]: j for j in found}
    assert len(plan) == len(set(plan))
    for name in plan:
        assert jobs.job_phase(by_name[name]) != "Active"
    oldest_first = sorted(
        found, key=lambda j: (int(j["metadata"]["annotations"][jobs.TRIGGER_ANNOTATION]), j["metadata"]["name"])
    )
    kept = {j["metadata"]["name"] for j in oldest_first[max(0, len(oldest_first) - history) :]}
    assert not kept & set(plan)
    expected = {
        j["metadata"]["name"] for j in found if j["metadata"]["name"] not in kept and jobs.job_phase(j) != "Active"
    }
    assert set(plan) == expected


# ---------------------------------------------------------------------------------------------
# views of existing Jobs


def test_view_keeps_what_status_and_pruning_need() -> None:
    body = build()
    body["metadata"]["creationTimestamp"] = "2024-05-01T12:00:00Z"
    body["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    assert jobs.view(body) == jobs.JobView(
        name=body["metadata"]["name"],
        phase="Succeeded",
        sequence=4,
        created="2024-05-01T12:00:00Z",
        owner_uid=UID,
        deleting=False,
    )
    body["metadata"]["deletionTimestamp"] = "2024-05-02T00:00:00Z"
    assert jobs.view(body).deleting


def test_a_job_tells_its_owner_and_the_hashes_it_covered() -> None:
    body = build()
    assert jobs.owned_by(body, UID) and not jobs.owned_by(body, "someone-else")
    assert jobs.covered_hashes(body) == ("a" * 32, "b" * 32)
    assert jobs.covered_hashes({"metadata": {}}) == ("",)


def test_with_traceparent_annotates_a_copy() -> None:
    body = jobs.build_job(
        owner=ctj()["metadata"], template=ctj()["spec"]["jobTemplate"], sequence=1, changed=[], hashes=[]
    )
    assert jobs.with_traceparent(body, None) is body
    traced = jobs.with_traceparent(body, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    assert traced["metadata"]["annotations"][jobs.TRACEPARENT_ANNOTATION].startswith("00-0af7")
    assert jobs.TRACEPARENT_ANNOTATION not in body["metadata"]["annotations"]
