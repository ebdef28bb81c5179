"""The worker loop's requeue policy: results, conflicts, errors, fencing; backoff growth and reset."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from changejob.kube import transport, writes
from changejob.runtime.controller import Backoff, Controller, Result
from changejob.runtime.queue import WorkQueue
from changejob.telemetry import metrics

pytestmark = pytest.mark.unit

CONFLICT = transport.ApiError(409, "Conflict", "the object has been modified")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Script:
    """A reconcile that answers each call with the next outcome: a Result or an exception to raise."""

    def __init__(self, *outcomes: Result | BaseException) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[str] = []

    def __call__(self, key: str) -> Result:
        self.calls.append(key)
        outcome = self.outcomes.pop(0) if self.outcomes else Result()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def setup(script: Callable[[str], Result]) -> tuple[Clock, WorkQueue[str], Controller[str]]:
    clock = Clock()
    work: WorkQueue[str] = WorkQueue(clock=clock)
    return clock, work, Controller(work=work, reconcile=script, clock=clock)


def due_in(clock: Clock, work: WorkQueue[str], key: str, delay: float) -> bool:
    """Whether ``key`` comes back exactly ``delay`` seconds from now (not a moment earlier)."""
    start = clock.now
    clock.now = start + delay - 1e-6
    early = work.get(timeout=0)
    clock.now = start + delay
    found = work.get(timeout=0)
    if found is not None:
        work.done(found)
    return early is None and found == key


def test_backoff_doubles_up_to_its_cap_per_key_and_forgets() -> None:
    backoff: Backoff[str] = Backoff(base=0.5, cap=4.0)
    assert [backoff.next("a") for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert backoff.next("b") == 0.5 and backoff.failures("a") == 5
    backoff.forget("a")
    assert backoff.failures("a") == 0 and backoff.next("a") == 0.5


def test_errors_back_off_and_a_success_resets_the_backoff() -> None:
    boom = RuntimeError("the API server is down")
    script = Script(boom, boom, boom, Result(), boom)
    clock, work, controller = setup(script)
    errors = metrics.reconcile_errors_total._value.get()
    work.add("a")
    assert controller.process_one(timeout=0)
    assert due_in(clock, work, "a", 0.5)
    work.add("a")
    controller.process_one(timeout=0)
    assert due_in(clock, work, "a", 1.0)
    work.add("a")
    controller.process_one(timeout=0)
    assert due_in(clock, work, "a", 2.0)
    work.add("a")
    controller.process_one(timeout=0)  # succeeds: nothing scheduled, the backoff starts over
    assert controller.errors.failures("a") == 0
    clock.now += 1000
    assert work.get(timeout=0) is None
    work.add("a")
    controller.process_one(timeout=0)
    assert due_in(clock, work, "a", 0.5)
    assert metrics.reconcile_errors_total._value.get() - errors == 4


def test_the_error_backoff_is_capped() -> None:
    clock, work, controller = setup(Script(*[RuntimeError("still down") for _ in range(11)]))
    for _ in range(10):
        work.add("a")
        controller.process_one(timeout=0)
        clock.now += 1000
        key = work.get(timeout=0)
        assert key == "a"
        work.done(key)
    work.add("a")
    controller.process_one(timeout=0)
    assert due_in(clock, work, "a", 60.0)


def test_a_conflict_comes_back_fast() -> None:
    clock, work, controller = setup(Script(CONFLICT, CONFLICT, Result()))
    errors = metrics.reconcile_errors_total._value.get()
    work.add("a")
    controller.process_one(timeout=0)
    assert due_in(clock, work, "a", 0.005)
    work.add("a")
    controller.process_one(timeout=0)
    assert due_in(clock, work, "a", 0.01)
    assert metrics.reconcile_errors_total._value.get() == errors  # a conflict is not an error
    work.add("a")
    controller.process_one(timeout=0)
    assert controller.conflicts.failures("a") == 0


def test_requeue_after_comes_back_when_asked() -> None:
    clock, work, controller = setup(Script(Result(requeue_after=30.0)))
    work.add("a")
    controller.process_one(timeout=0)
    assert due_in(clock, work, "a", 30.0)


def test_a_fenced_write_is_not_an_error_and_is_looked_at_again() -> None:
    clock, work, controller = setup(Script(writes.Fenced("shard moved")))
    errors = metrics.reconcile_errors_total._value.get()
    work.add("a")
    controller.process_one(timeout=0)
    assert metrics.reconcile_errors_total._value.get() == errors
    assert due_in(clock, work, "a", 0.5)


def test_a_change_does_not_wait_for_the_backoff() -> None:
    _, work, controller = setup(Script(RuntimeError("x")))
    work.add("a")
    controller.process_one(timeout=0)
    work.add("a")  # a watch event for the key
    assert work.get(timeout=0) == "a"


def test_forget_drops_the_timer_and_the_backoff() -> None:
    clock, work, controller = setup(Script(RuntimeError("x")))
    work.add("a")
    controller.process_one(timeout=0)
    controller.forget("a")
    assert controller.errors.failures("a") == 0
    clock.now += 1000
    assert work.get(timeout=0) is None


def test_keys_back_off_independently() -> None:
    clock, work, controller = setup(Script(RuntimeError("x"), RuntimeError("x"), RuntimeError("x")))
    for _ in range(2):
        work.add("a")
        controller.process_one(timeout=0)
        clock.now += 1000
        work.done(work.get(timeout=0) or "")
    work.add("b")
    controller.process_one(timeout=0)
    assert controller.errors.failures("a") == 2 and controller.errors.failures("b") == 1
    assert due_in(clock, work, "b", 0.5)
