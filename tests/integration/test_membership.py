"""Lease-based shard ownership: several members in one process against the real API server.

Each member has its own Transport and Settings (lease 3 s, renew deadline 2 s, retry 0.5 s, 16 shards)
and records every ownership change with the local monotonic time. Besides what each test checks,
``Group.assert_exclusive`` replays those records: no shard may ever have been acted on by two members
at once (a member acts from the ``gained`` callback until the earliest of its ``lost`` callback, its
``trusted_until`` deadline and the moment it was halted).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from kubernetes import client as k8s_client
from relay import Relay, relayed_client, target_of

from changejob import settings as settings_mod
from changejob.kube import leases, transport
from changejob.runtime import membership, ownership

pytestmark = pytest.mark.integration

LEASE, RENEW, RETRY, SHARDS = 3.0, 2.0, 0.5, 16


def wait_for(check: Callable[[], bool], *, timeout: float, what: str) -> float:
    """Poll ``check`` every 20 ms; return the seconds it took, or fail after ``timeout``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start


def key_in(shard: int) -> ownership.CtjKey:
    """Some CTJ key that falls into ``shard``."""
    for i in range(10_000):
        key = ("default", f"ctj-{i}")
        if ownership.shard_of(key, SHARDS) == shard:
            return key
    raise AssertionError(f"no key for shard {shard}")


@dataclass
class Member:
    name: str
    membership: membership.LeaseMembership
    stop_event: threading.Event
    changes: list[tuple[float, set[int], set[int], float | None]] = field(default_factory=list)
    halted_at: float | None = None
    stopped: bool = False

    def on_change(self, gained: set[int], lost: set[int]) -> None:
        self.changes.append((time.monotonic(), set(gained), set(lost), self.membership.trusted_until()))

    def halt(self) -> None:
        """A crash: the thread stops renewing and releases nothing."""
        self.halted_at = time.monotonic()
        self.stop_event.set()

    def leave(self) -> None:
        self.membership.stop()
        self.stopped = True

    @property
    def active(self) -> bool:
        return self.halted_at is None and not self.stopped

    def acting_intervals(self, now: float) -> Iterator[tuple[int, float, float]]:
        started: dict[int, float] = {}
        end_cap = self.halted_at if self.halted_at is not None else now
        for at, gained, lost, trusted in self.changes:
            for shard in lost:
                begin = started.pop(shard)
                yield shard, begin, min(at, trusted if trusted is not None else at, end_cap)
            for shard in gained:
                started[shard] = at
        for shard, begin in started.items():
            yield shard, begin, end_cap


class Group:
    """Members sharing one namespace, and a view of the shard Leases in it."""

    def __init__(self, api_client: k8s_client.ApiClient, namespace: str) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.members: dict[str, Member] = {}
        self.view = leases.Leases(transport.Transport(api_client), namespace=namespace)

    def add(self, name: str, *, api_client: k8s_client.ApiClient | None = None) -> Member:
        settings = settings_mod.Settings.model_validate(
            {
                "identity": name,
                "leader_elect": True,
                "leader_election_namespace": self.namespace,
                "shards": SHARDS,
                "leader_elect_lease_duration": timedelta(seconds=LEASE),
                "leader_elect_renew_deadline": timedelta(seconds=RENEW),
                "leader_elect_retry_period": timedelta(seconds=RETRY),
                "metrics_bind_address": "0",
                "health_probe_bind_address": "0",
            }
        )
        stop = threading.Event()
        ownership_ = membership.LeaseMembership(
            transport_=transport.Transport(api_client or self.api_client), settings=settings, stop=stop
        )
        member = Member(name=name, membership=ownership_, stop_event=stop)
        self.members[name] = member
        ownership_.start(member.on_change)
        return member

    def active(self) -> list[Member]:
        return [m for m in self.members.values() if m.active]

    def owners(self) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {n: [] for n in range(SHARDS)}
        for member in self.active():
            for shard in member.membership.owned():
                out[shard].append(member.name)
        return out

    def holders(self) -> dict[int, str]:
        return {n: leases.holder(lease) for n, lease in self.view.snapshot().shards.items()}

    def balanced_among(self, names: set[str]) -> bool:
        """Every shard owned by exactly one of ``names``, counts within ±1, and the Leases agree."""
        owners = self.owners()
        if any(len(who) != 1 or who[0] not in names for who in owners.values()):
            return False
        counts = [len(self.members[n].membership.owned()) for n in names]
        return max(counts) - min(counts) <= 1 and self.holders() == {n: w[0] for n, w in owners.items()}

    def assert_exclusive(self) -> None:
        now = time.monotonic()
        by_shard: dict[int, list[tuple[float, float, str]]] = {}
        for member in self.members.values():
            for shard, begin, end in member.acting_intervals(now):
                if end > begin:
                    by_shard.setdefault(shard, []).append((begin, end, member.name))
        for shard, spans in by_shard.items():
            spans.sort()
            for (_, end, who), (begin, _, next_who) in itertools.pairwise(spans):
                assert begin >= end, f"shard {shard}: {next_who} acted from {begin} while {who} until {end}"

    def close(self) -> None:
        for member in self.members.values():
            if member.active:
                member.leave()


@pytest.fixture
def group(api_client: k8s_client.ApiClient, namespace: str) -> Iterator[Group]:
    g = Group(api_client, namespace)
    yield g
    g.close()


# --- tests ------------------------------------------------------------------------------------------
def test_three_members_share_every_shard(group: Group) -> None:
    members = [group.add(n) for n in ("alpha", "beta", "gamma")]
    wait_for(lambda: group.balanced_among({"alpha", "beta", "gamma"}), timeout=10, what="balance")
    assert all(m.membership.joined() for m in members)
    assert sorted(len(m.membership.owned()) for m in members) == [5, 5, 6]

    snapshot = group.view.snapshot()
    assert {leases.holder(m) for m in snapshot.members} == {"alpha", "beta", "gamma"}
    assert {leases.name_of(m) for m in snapshot.members} == {
        "kube-changejob-member-alpha",
        "kube-changejob-member-beta",
        "kube-changejob-member-gamma",
    }
    for n, lease in snapshot.shards.items():
        assert lease["metadata"]["labels"] == {"changejob.dev/role": "shard", "changejob.dev/shard": str(n)}

    # Steady state: members renew, shard Leases are not written at all.
    time.sleep(4 * RETRY)
    later = group.view.snapshot()
    assert {n: leases.resource_version(s) for n, s in later.shards.items()} == {
        n: leases.resource_version(s) for n, s in snapshot.shards.items()
    }
    assert not (
        {leases.resource_version(m) for m in later.members} & {leases.resource_version(m) for m in snapshot.members}
    )

    for member in members:
        for shard in range(SHARDS):
            mine = shard in member.membership.owned()
            assert member.membership.owns(key_in(shard)) is mine
            assert member.membership.may_act(key_in(shard)) is mine
    group.assert_exclusive()


def test_stop_hands_over_within_a_retry_period_or_two(group: Group) -> None:
    alpha, _, _ = (group.add(n) for n in ("alpha", "beta", "gamma"))
    wait_for(lambda: group.balanced_among({"alpha", "beta", "gamma"}), timeout=10, what="balance")

    alpha.leave()
    assert alpha.membership.owned() == set()
    assert not any(alpha.membership.may_act(key_in(n)) for n in range(SHARDS))
    holders = group.holders()
    assert "alpha" not in holders.values()
    assert "kube-changejob-member-alpha" not in {leases.name_of(m) for m in group.view.snapshot().members}

    # Peers see the deletion at their next round (≤ RETRY) and take the released shards; rebalancing
    # between the two survivors may need another release-then-acquire step: typically 0.5-1.8 s.
    took = wait_for(lambda: group.balanced_among({"beta", "gamma"}), timeout=2.0 + 2 * RETRY, what="handover")
    print(f"handover after stop(): {took:.2f}s")
    group.assert_exclusive()


def test_crashed_member_is_replaced_after_the_lease_duration(group: Group) -> None:
    alpha, beta, gamma = (group.add(n) for n in ("alpha", "beta", "gamma"))
    wait_for(lambda: group.balanced_among({"alpha", "beta", "gamma"}), timeout=10, what="balance")
    orphaned = alpha.membership.owned()

    halted = time.monotonic()
    alpha.halt()
    assert not any(alpha.membership.may_act(key_in(n)) for n in orphaned)
    # Its Leases stay; peers must not take its shards before its member Lease, as last renewed (a round
    # already running when it was halted may still renew), can have expired.
    time.sleep(2 * RETRY)
    trusted = alpha.membership.trusted_until()
    assert trusted is not None
    expires = trusted - RENEW + LEASE
    time.sleep(max(0.0, expires - 0.3 - time.monotonic()))
    assert not orphaned & (beta.membership.owned() | gamma.membership.owned())
    assert {n for n, who in group.holders().items() if who == "alpha"} == orphaned

    wait_for(lambda: group.balanced_among({"beta", "gamma"}), timeout=LEASE + 2, what="takeover")
    print(f"takeover after a crash: {time.monotonic() - halted:.2f}s")
    # The expired member Lease is cleaned up by a peer.
    wait_for(
        lambda: "alpha" not in {leases.holder(m) for m in group.view.snapshot().members},
        timeout=2 * RETRY + 1,
        what="expired member Lease deleted",
    )
    group.assert_exclusive()


def test_joining_member_rebalances(group: Group) -> None:
    group.add("alpha")
    wait_for(lambda: group.balanced_among({"alpha"}), timeout=10, what="a single owner")
    group.add("beta")
    wait_for(lambda: group.balanced_among({"alpha", "beta"}), timeout=5, what="balance of two")
    gamma = group.add("gamma")
    took = wait_for(lambda: group.balanced_among({"alpha", "beta", "gamma"}), timeout=5, what="balance")
    print(f"rebalance after a join: {took:.2f}s")
    assert len(gamma.membership.owned()) in (5, 6)
    assert gamma.membership.joined()
    group.assert_exclusive()


def test_partitioned_member_stops_acting_before_peers_take_over(group: Group, api_client: k8s_client.ApiClient) -> None:
    relay = Relay(*target_of(api_client))
    relayed = relayed_client(api_client, relay)
    try:
        group.add("alpha")
        group.add("beta")
        gamma = group.add("gamma", api_client=relayed)
        wait_for(lambda: group.balanced_among({"alpha", "beta", "gamma"}), timeout=10, what="balance")
        held = gamma.membership.owned()

        cut_at = time.monotonic()
        relay.cut()
        wait_for(
            lambda: not any(gamma.membership.may_act(key_in(n)) for n in held),
            timeout=RENEW + 0.1,
            what="the partitioned member to stop acting",
        )
        wait_for(lambda: not gamma.membership.owned(), timeout=RENEW + 2, what="its shards dropped")
        took = wait_for(lambda: group.balanced_among({"alpha", "beta"}), timeout=LEASE + 3, what="peers to take over")
        print(f"takeover after a partition: {time.monotonic() - cut_at:.2f}s (waited {took:.2f}s)")
        assert {n for n, who in group.holders().items() if who == "gamma"} == set()

        relay.heal()
        wait_for(
            lambda: group.balanced_among({"alpha", "beta", "gamma"}),
            timeout=LEASE + 5,
            what="rejoin after the partition heals",
        )
        group.assert_exclusive()
    finally:
        for member in group.active():
            member.leave()
        relay.close()
        relayed.close()  # type: ignore[no-untyped-call]  # untyped upstream


def test_lease_names_are_valid_for_any_identity() -> None:
    assert leases.member_name("pod-abc-123") == "kube-changejob-member-pod-abc-123"
    odd = leases.member_name("Host_Name:42")
    assert odd.startswith("kube-changejob-member-host-name-42-") and odd != leases.member_name("host-name-42")
    assert len(leases.member_name("x" * 400)) <= 253
