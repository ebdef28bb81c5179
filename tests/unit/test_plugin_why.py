"""``kubectl changejob why``: the account of a CTJ, built from plain status dicts (no cluster).

One test per state a CTJ can be waiting in: no status yet, a new generation not observed, idle
(Any and All), cooldown-deferred, condition All partly met, a missing / forbidden / unknown
resource, invalid spec, stalled, suspended (with and without pending changes), waiting for an
active Job (concurrencyPolicy Forbid), a manual trigger request not handled yet; plus the resource
lines (changed fields, selector resources with their matched count) and the Jobs list.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from changejob.plugin import why

pytestmark = pytest.mark.unit

NOW = datetime.datetime(2026, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)


def cond(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": "x"}


def field(name: str, hash_: str, last: str | None) -> dict[str, Any]:
    found = {"field": name, "hash": hash_}
    if last is not None:
        found["lastTriggeredHash"] = last
    return found


def entry(
    name: str,
    *,
    state: str = "Present",
    fields: Sequence[Mapping[str, Any]] = (),
    changed: bool = False,
    message: str | None = None,
    reference: str | None = "h0",
    **extra: Any,
) -> dict[str, Any]:
    found: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "namespace": "ns",
        "fields": list(fields) or [field("*", "h1" if changed else "h0", "h0")],
        "hash": "h1" if changed else "h0",
        "changed": changed,
        "state": state,
        **extra,
    }
    if name:
        found["name"] = name
    if reference:
        found["lastTriggeredHash"] = reference
    if message:
        found["message"] = message
    return found


def ctj(
    *,
    names: Sequence[str] = ("a",),
    entries: Sequence[Mapping[str, Any]] | None = None,
    conditions: Sequence[Mapping[str, Any]] | None = None,
    spec: Mapping[str, Any] | None = None,
    status: Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
    generation: int = 1,
) -> dict[str, Any]:
    resources = [{"apiVersion": "v1", "kind": "ConfigMap", "name": n, "namespace": "ns"} for n in names]
    body: dict[str, Any] = {
        "apiVersion": "triggers.changejob.dev/v1alpha",
        "kind": "ChangeTriggeredJob",
        "metadata": {"name": "watcher", "namespace": "ns", "generation": generation},
        "spec": {"resources": resources, "condition": "Any", "cooldown": "30s", "history": 5, **(spec or {})},
        "status": {
            "observedGeneration": 1,
            "conditions": list(
                conditions
                if conditions is not None
                else [cond("Ready", "True", "Reconciled", "watching"), cond("Progressing", "False", "Idle")]
            ),
            "resourceHashes": list(entries if entries is not None else [entry(n) for n in names]),
            "triggerCount": 2,
            "lastTriggeredTime": "2026-05-01T11:55:00.000000Z",
            "lastJobName": "watcher-2",
            "lastJobStatus": "Succeeded",
            **(status or {}),
        },
    }
    if annotations:
        body["metadata"]["annotations"] = dict(annotations)
    return body


def job(name: str, sequence: int | str, *, phase: str = "Complete", **annotations: str) -> dict[str, Any]:
    conditions = [] if phase == "Active" else [{"type": phase, "status": "True"}]
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": "2026-05-01T11:50:00Z",
            "labels": {"changejob.dev/owner": "watcher"},
            "annotations": {"changejob.dev/trigger": str(sequence), **annotations},
        },
        "status": {"conditions": conditions},
    }


def waiting(text: str) -> list[str]:
    """The items of the 'Waiting for' part."""
    part = text.split("Waiting for:", 1)[1].split("\n\n", 1)[0]
    return [line[4:] for line in part.splitlines() if line.startswith("  - ")]


def section(text: str, title: str) -> str:
    return next(p for p in text.split("\n\n") if p.startswith(title))


# --------------------------------------------------------------------------------------------------
# What it waits for


def test_idle_any_waits_for_a_change() -> None:
    text = why.explain(ctj(), [], now=NOW)
    assert waiting(text) == [
        "a change of any watched resource (condition Any): nothing has changed since the last trigger"
    ]
    assert "ConfigMap ns/a  Present    unchanged since the last trigger" in text
    assert text.startswith("ChangeTriggeredJob ns/watcher: condition Any, cooldown 30s, history 5\n")
    assert "Ready: True (Reconciled) watching" in text
    assert "Last trigger: #2 2026-05-01T11:55:00.000000Z (5m ago), Job watcher-2 Succeeded" in text


def test_idle_all_waits_for_every_resource() -> None:
    text = why.explain(ctj(names=("a", "b"), spec={"condition": "All"}), [], now=NOW)
    assert waiting(text) == ["a change of every resource (condition All): none has changed since the last trigger"]


def test_all_condition_partly_met_names_what_is_missing() -> None:
    entries = [entry("a", changed=True), entry("b"), entry("c")]
    text = why.explain(ctj(names=("a", "b", "c"), entries=entries, spec={"condition": "All"}), [], now=NOW)
    assert waiting(text) == [
        "a change of ConfigMap ns/b, ConfigMap ns/c (condition All: every resource must change since the last "
        "trigger; changed so far: ConfigMap ns/a)"
    ]


def test_all_condition_with_a_missing_resource_waits_for_it_to_exist_and_change() -> None:
    entries = [entry("a", changed=True), entry("b", state="Missing", message="ConfigMap/ns/b not found", changed=True)]
    text = why.explain(ctj(names=("a", "b"), entries=entries, spec={"condition": "All"}), [], now=NOW)
    assert waiting(text) == [
        "a change of ConfigMap ns/b (condition All: every resource must change since the last trigger; "
        "changed so far: ConfigMap ns/a)",
        "ConfigMap ns/b to exist: ConfigMap/ns/b not found",
    ]


def test_cooldown_deferred_says_until_when() -> None:
    text = why.explain(
        ctj(
            entries=[entry("a", changed=True)],
            conditions=[cond("Ready", "True", "Reconciled"), cond("Progressing", "True", "CooldownDeferred")],
            status={"nextTriggerTime": "2026-05-01T12:00:42.500000Z"},
        ),
        [],
        now=NOW,
    )
    assert waiting(text) == [
        "the cooldown (30s) to end: the deferred trigger fires at 2026-05-01T12:00:42.500000Z (in 42s) and covers "
        "every change until then"
    ]


def test_cooldown_overdue_is_shown_as_past() -> None:
    text = why.explain(
        ctj(entries=[entry("a", changed=True)], status={"nextTriggerTime": "2026-05-01T11:59:00Z"}), [], now=NOW
    )
    assert "fires at 2026-05-01T11:59:00Z (60s ago)" in waiting(text)[0]


def test_any_change_not_yet_acted_on() -> None:
    text = why.explain(ctj(names=("a", "b"), entries=[entry("a", changed=True), entry("b")]), [], now=NOW)
    assert waiting(text) == ["the operator to act on the change of ConfigMap ns/a"]


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("Missing", "ConfigMap ns/a to exist: gone"),
        ("Forbidden", "the operator to be allowed to read ConfigMap ns/a: gone"),
        ("Unknown", "ConfigMap ns/a to be readable (Unknown): gone"),
    ],
)
def test_resource_not_present(state: str, expected: str) -> None:
    text = why.explain(
        ctj(
            entries=[entry("a", state=state, message="gone")],
            conditions=[cond("Ready", "False", f"Resource{state}", "ConfigMap/ns/a: gone")],
        ),
        [],
        now=NOW,
    )
    # With no resource present, "nothing has changed" would be beside the point.
    assert waiting(text) == [expected]
    assert f"ConfigMap ns/a  {state.ljust(9)}  gone" in text


def test_invalid_spec_waits_for_a_fix_and_nothing_else() -> None:
    message = 'spec.resources[0].fields[0]: invalid field path "data["'
    text = why.explain(
        ctj(
            entries=[],
            conditions=[
                cond("Ready", "False", "InvalidSpec", message),
                cond("Degraded", "True", "InvalidSpec", message),
            ],
            status={"triggerCount": 0, "lastJobName": None},
        ),
        [],
        now=NOW,
    )
    assert waiting(text) == [
        f"a fix of the spec: it is invalid: {message} (kubectl edit changetriggeredjob watcher -n ns)"
    ]
    assert "ConfigMap ns/a  not watched: the spec is invalid" in text
    assert "Last trigger: none yet" in text


def test_stalled_condition_is_reported_with_its_reason() -> None:
    text = why.explain(
        ctj(
            conditions=[
                cond("Ready", "False", "JobRejected", "the Job template is refused"),
                cond("Stalled", "True", "JobRejected", "Job.batch is invalid: spec.template.spec.containers: Required"),
            ]
        ),
        [],
        now=NOW,
    )
    assert waiting(text) == [
        "a fix: stalled (JobRejected): Job.batch is invalid: spec.template.spec.containers: Required"
    ]


def test_stalled_false_is_ignored() -> None:
    text = why.explain(
        ctj(conditions=[cond("Ready", "True", "Reconciled"), cond("Stalled", "False", "Ok")]), [], now=NOW
    )
    assert not any("stalled" in item for item in waiting(text))


def test_suspended_with_pending_changes_says_they_fire_on_resume() -> None:
    text = why.explain(
        ctj(
            entries=[entry("a", changed=True)],
            spec={"suspend": True},
            conditions=[cond("Ready", "True", "Reconciled"), cond("Progressing", "False", "Suspended", "suspended")],
        ),
        [],
        now=NOW,
    )
    assert waiting(text)[0] == (
        "resume: suspended, so no Job is created; changes are still recorded (1 resource(s) changed since the last "
        "trigger; they trigger one Job on resume): kubectl changejob resume watcher -n ns"
    )
    assert ", suspended\n" in text.splitlines()[0] + "\n"


def test_suspended_known_only_from_the_condition() -> None:
    """An operator that reports Suspended while this copy of the spec has no suspend field."""
    text = why.explain(
        ctj(conditions=[cond("Ready", "True", "Reconciled"), cond("Progressing", "False", "Suspended")]), [], now=NOW
    )
    assert waiting(text)[0].startswith("resume: suspended, so no Job is created; changes are still recorded (nothing")


def test_waiting_for_active_job_under_forbid() -> None:
    text = why.explain(
        ctj(
            entries=[entry("a", changed=True)],
            spec={"concurrencyPolicy": "Forbid"},
            conditions=[
                cond("Ready", "True", "Reconciled"),
                cond("Progressing", "True", "WaitingForActiveJob", "job watcher-2 is still running"),
            ],
            status={"lastJobStatus": "Active"},
        ),
        [],
        now=NOW,
    )
    assert waiting(text) == [
        "Job watcher-2 to finish (concurrencyPolicy Forbid): then one Job covers every change made meanwhile; "
        "job watcher-2 is still running"
    ]
    assert "concurrencyPolicy Forbid" in text.splitlines()[0]


def test_manual_request_not_handled_yet() -> None:
    text = why.explain(
        ctj(annotations={why.TRIGGER_REQUEST_ANNOTATION: "r2"}, status={"lastTriggerRequest": "r1"}), [], now=NOW
    )
    assert waiting(text)[0] == "the operator to handle trigger request r2 (status.lastTriggerRequest: r1)"


def test_manual_request_handled_is_not_mentioned() -> None:
    text = why.explain(
        ctj(annotations={why.TRIGGER_REQUEST_ANNOTATION: "r2"}, status={"lastTriggerRequest": "r2"}), [], now=NOW
    )
    assert not any("trigger request" in item for item in waiting(text))


def test_manual_request_while_suspended_fires_on_resume() -> None:
    text = why.explain(ctj(annotations={why.TRIGGER_REQUEST_ANNOTATION: "r1"}, spec={"suspend": True}), [], now=NOW)
    assert waiting(text)[0] == (
        "the operator to handle trigger request r1 (status.lastTriggerRequest: unset); while suspended it is "
        "handled on resume"
    )


def test_no_status_yet_asks_whether_an_operator_runs() -> None:
    body = ctj()
    del body["status"]
    text = why.explain(body, [], now=NOW)
    assert waiting(text) == [
        "the operator to write a first status (none yet): is kube-changejob running and serving namespace ns?"
    ]
    assert "ConfigMap ns/a  not observed yet" in text


def test_new_generation_not_observed_yet() -> None:
    text = why.explain(ctj(generation=3), [], now=NOW)
    assert waiting(text)[0] == (
        "the operator to observe generation 3 of the spec (status describes generation 1; what follows may be out "
        "of date)"
    )


def test_reconciling_is_shown_unless_already_explained() -> None:
    deferred = ctj(
        entries=[entry("a", changed=True)],
        conditions=[cond("Ready", "True", "Reconciled"), cond("Reconciling", "True", "CooldownDeferred", "x")],
        status={"nextTriggerTime": "2026-05-01T12:00:42Z"},
    )
    assert [item.split(" (")[0] for item in waiting(why.explain(deferred, [], now=NOW))] == ["the cooldown"]
    starting = ctj(conditions=[cond("Ready", "True", "Reconciled"), cond("Reconciling", "True", "Listing", "3 of 9")])
    assert waiting(why.explain(starting, [], now=NOW)) == [
        "the operator to finish reconciling (Listing): 3 of 9",
        "a change of any watched resource (condition Any): nothing has changed since the last trigger",
    ]


# --------------------------------------------------------------------------------------------------
# Resources


def test_changed_fields_are_named_with_appearance_and_removal() -> None:
    fields = [
        field("data.a", "h2", "h1"),
        field("data.b", "h1", "h1"),
        field("data.c", "h3", "absent"),
        field("data.d", "absent", "h4"),
    ]
    text = why.explain(ctj(entries=[entry("a", fields=fields, changed=True)]), [], now=NOW)
    assert "changed since the last trigger: data.a, data.c (appeared), data.d (gone)" in text


def test_resource_without_reference_yet() -> None:
    text = why.explain(ctj(entries=[entry("a", reference=None)]), [], now=NOW)
    assert "ConfigMap ns/a  Present    no reference yet (the first observation sets it, without a Job)" in text


def test_status_entries_are_matched_by_identity_not_position() -> None:
    entries = [entry("b", changed=True), entry("a")]
    text = why.explain(ctj(names=("a", "b"), entries=entries), [], now=NOW)
    lines = section(text, "Resources:").splitlines()
    assert lines[1].startswith("  ConfigMap ns/a") and lines[1].endswith("unchanged since the last trigger")
    assert lines[2].startswith("  ConfigMap ns/b") and "changed since the last trigger: *" in lines[2]


def test_selector_resource_shows_its_selector_and_matched_count() -> None:
    body = ctj(names=())
    body["spec"]["resources"] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "namespace": "ns",
            "selector": {
                "matchLabels": {"app": "web"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["a", "b"]},
                    {"key": "canary", "operator": "DoesNotExist"},
                ],
            },
        }
    ]
    body["status"]["resourceHashes"] = [entry("", changed=True, matchedCount=3)]
    text = why.explain(body, [], now=NOW)
    assert (
        "ConfigMap in ns [app=web,tier in (a,b),!canary]  Present    3 objects matched; changed since the last trigger"
        in text
    )


def test_selector_resource_without_a_count_is_shown_without_one() -> None:
    body = ctj(names=())
    body["spec"]["resources"] = [{"apiVersion": "v1", "kind": "Node", "selector": {"matchLabels": {"a": "b"}}}]
    body["status"]["resourceHashes"] = [{**entry(""), "kind": "Node", "namespace": None}]
    text = why.explain(body, [], now=NOW)
    assert "  Node [a=b]  Present    unchanged since the last trigger" in text


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({}, "(everything)"),
        ({"matchExpressions": [{"key": "k", "operator": "NotIn", "values": ["x"]}]}, "k notin (x)"),
        ({"matchExpressions": [{"key": "k", "operator": "Exists"}]}, "k"),
        ("not a selector", "?"),
    ],
)
def test_selector_text(selector: object, expected: str) -> None:
    assert why.selector_text(selector) == expected


# --------------------------------------------------------------------------------------------------
# Jobs and small texts


def test_jobs_newest_first_by_trigger_number_with_status_and_cause() -> None:
    found = [
        job("watcher-9", 9, phase="Failed", **{"changejob.dev/changed": "ConfigMap/ns/a:data"}),
        job("watcher-10", 10, phase="Active", **{"changejob.dev/changed": "manual"}),
        job("watcher-8", 8, **{"changejob.dev/changed": "x" * 200}),
        job("watcher-11", 11, **{why.TRIGGER_REQUEST_ANNOTATION: "r1", "changejob.dev/changed": "manual"}),
    ]
    lines = section(why.explain(ctj(), found, now=NOW), "Jobs").splitlines()
    assert lines[0] == "Jobs (newest first):"
    assert [line.split()[:3] for line in lines[1:]] == [
        ["#11", "watcher-11", "Succeeded"],
        ["#10", "watcher-10", "Active"],
        ["#9", "watcher-9", "Failed"],
        ["#8", "watcher-8", "Succeeded"],
    ]
    assert lines[1].endswith("10m ago  manual")
    assert lines[3].endswith("ConfigMap/ns/a:data")
    assert lines[4].endswith("x" * 97 + "...")


def test_jobs_list_is_capped() -> None:
    found = [job(f"watcher-{n}", n) for n in range(why.JOBS_SHOWN + 3)]
    lines = section(why.explain(ctj(), found, now=NOW), "Jobs").splitlines()
    assert lines[0] == f"Jobs (newest first, {why.JOBS_SHOWN} of {why.JOBS_SHOWN + 3}):"
    assert len(lines) == 1 + why.JOBS_SHOWN and lines[1].split()[0] == f"#{why.JOBS_SHOWN + 2}"


def test_jobs_none_and_not_listed() -> None:
    assert "Jobs: none (label changejob.dev/owner=watcher)" in why.explain(ctj(), [], now=NOW)
    text = why.explain(ctj(), None, now=NOW, jobs_error="jobs.batch is forbidden")
    assert "Jobs: not listed (jobs.batch is forbidden)" in text


def test_a_job_with_a_strange_trigger_annotation_sorts_last() -> None:
    lines = section(why.explain(ctj(), [job("odd", "x"), job("watcher-1", 1)], now=NOW), "Jobs").splitlines()
    assert lines[1].split()[:2] == ["#1", "watcher-1"] and lines[2].split()[:2] == ["#?", "odd"]


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (42, "42s"),
        (119, "119s"),
        (330, "5m30s"),
        (600, "10m"),
        (2 * 3600 + 59 * 60, "179m"),
        (5 * 3600 + 30 * 60, "5h30m"),
        (20 * 3600, "20h"),
        (3 * 86400 + 5 * 3600, "3d5h"),
        (45 * 86400, "45d"),
        (800 * 86400, "2y"),
        (-5, "0s"),
    ],
)
def test_human_duration(seconds: int, expected: str) -> None:
    assert why.human_duration(datetime.timedelta(seconds=seconds)) == expected


def test_every_part_is_present_and_the_text_ends_with_a_newline() -> None:
    text = why.explain(ctj(), [job("watcher-2", 2)], now=NOW)
    assert [part.splitlines()[0].split(":")[0] for part in text.split("\n\n")] == [
        "ChangeTriggeredJob ns/watcher",
        "Resources",
        "Waiting for",
        "Jobs (newest first)",
    ]
    assert text.endswith("\n") and not text.endswith("\n\n")
