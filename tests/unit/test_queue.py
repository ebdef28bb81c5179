"""The work queue: de-duplication, one worker per key, timers, and resync keys kept behind changes."""

from __future__ import annotations

from collections.abc import Callable

from changejob.runtime.queue import WorkQueue


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def drain(q: WorkQueue[str]) -> list[str]:
    out = []
    while (key := q.get(timeout=0)) is not None:
        out.append(key)
        q.done(key)
    return out


def test_a_waiting_key_is_queued_once() -> None:
    q: WorkQueue[str] = WorkQueue()
    for key in ("a", "b", "a", "a"):
        q.add(key)
    assert len(q) == 2
    assert drain(q) == ["a", "b"]


def test_a_key_being_processed_is_requeued_after_done_not_handed_out_twice() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    assert q.get(timeout=0) == "a"
    q.add("a")
    assert q.get(timeout=0) is None  # still processing: no second worker gets it
    q.done("a")
    assert q.get(timeout=0) == "a"


def test_add_after_keeps_the_earliest_deadline() -> None:
    clock = Clock()
    q: WorkQueue[str] = WorkQueue(clock=clock)
    q.add_after("a", 10)
    q.add_after("a", 5)
    q.add_after("a", 20)
    assert q.get(timeout=0) is None
    clock.now += 5
    assert q.get(timeout=0) == "a"
    q.done("a")
    clock.now += 100
    assert q.get(timeout=0) is None  # the superseded timers fire nothing


def test_background_keys_wait_behind_every_change() -> None:
    q: WorkQueue[str] = WorkQueue()
    for key in ("r1", "r2", "r3"):
        q.add_background(key)
    q.add("c1")
    q.add("r2")  # a change to a key waiting for the resync moves it to the front line
    q.add_background("c1")  # already queued: stays where it is
    assert len(q) == 4
    assert q.get(timeout=0) == "c1"
    q.add("c2")
    assert drain(q) == ["r2", "c2", "r1", "r3"]
    assert len(q) == 0


def test_a_background_add_of_a_key_in_process_is_dropped() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    assert q.get(timeout=0) == "a"
    q.add_background("a")  # it is being evaluated right now: a resync adds nothing
    q.done("a")
    assert q.get(timeout=0) is None


def test_close_wakes_getters() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.close()
    assert q.get() is None


def test_the_queue_reports_its_own_depth() -> None:
    class Gauge:
        def set_function(self, read: Callable[[], int]) -> None:
            self.read = read

    gauge = Gauge()
    clock = Clock()
    q: WorkQueue[str] = WorkQueue(clock=clock, depth_gauge=gauge)
    q.add("a")
    q.add_background("b")
    q.add_after("c", 5)
    assert gauge.read() == 3
    drain(q)
    assert gauge.read() == 1  # the timer
    clock.now += 5
    drain(q)
    assert gauge.read() == 0
