"""CTJs to shards, shards to replicas."""

from __future__ import annotations

import collections
import itertools
import math

import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changejob.domain import shards

pytestmark = pytest.mark.unit

RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def members(count: int) -> list[str]:
    return [f"kube-changejob-{i}" for i in range(count)]


# ---------------------------------------------------------------------------------------------
# shard_of


def test_shard_of_is_xxh3_of_namespace_and_name() -> None:
    expected = xxhash.xxh3_64_intdigest(b"default/my-trigger") % 16
    assert shards.shard_of(namespace="default", name="my-trigger", shards=16) == expected


def test_shard_of_is_stable_and_in_range() -> None:
    for count in (1, 2, 7, 64):
        for index in range(50):
            shard = shards.shard_of(namespace="ns", name=f"ctj-{index}", shards=count)
            assert 0 <= shard < count
            assert shards.shard_of(namespace="ns", name=f"ctj-{index}", shards=count) == shard


def test_shard_of_separates_namespace_from_name() -> None:
    results = {shards.shard_of(namespace=ns, name=n, shards=2**20) for ns, n in [("ab", "c"), ("a", "bc")]}
    assert len(results) == 2


def test_shard_of_spreads_ctjs_evenly() -> None:
    counts = collections.Counter(
        shards.shard_of(namespace=f"ns-{i % 10}", name=f"ctj-{i}", shards=8) for i in range(8000)
    )
    assert set(counts) == set(range(8))
    assert all(800 < count < 1200 for count in counts.values()), counts


def test_shard_of_needs_a_shard() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        shards.shard_of(namespace="a", name="b", shards=0)


# ---------------------------------------------------------------------------------------------
# assign


def test_no_members_no_owners() -> None:
    assert shards.assign(shards=16, members=[]) == {}
    assert shards.assign(shards=0, members=["a"]) == {}


def test_single_member_owns_everything() -> None:
    assert shards.assign(shards=4, members=["only"]) == {0: "only", 1: "only", 2: "only", 3: "only"}


@pytest.mark.parametrize("count", range(1, 11))
@pytest.mark.parametrize("total", [1, 5, 16, 32, 100])
def test_balanced_within_one(count: int, total: int) -> None:
    owners = shards.assign(shards=total, members=members(count))
    assert sorted(owners) == list(range(total))
    per_member = collections.Counter(owners.values())
    loads = [per_member.get(member, 0) for member in members(count)]
    assert max(loads) - min(loads) <= 1
    assert min(loads) == total // count
    assert max(loads) == math.ceil(total / count)


def test_order_and_duplicates_do_not_matter() -> None:
    group = members(4)
    expected = shards.assign(shards=32, members=group)
    for permutation in itertools.permutations(group):
        assert shards.assign(shards=32, members=list(permutation)) == expected
    assert shards.assign(shards=32, members=group + group[:2]) == expected


def test_more_members_than_shards() -> None:
    owners = shards.assign(shards=3, members=members(5))
    assert sorted(owners) == [0, 1, 2]
    assert len(set(owners.values())) == 3


def _moves(before: dict[int, str], after: dict[int, str]) -> int:
    return sum(before[shard] != after[shard] for shard in before)


@pytest.mark.parametrize("prefix", ["kube-changejob-", "replica-"])
def test_few_moves_when_a_member_joins_or_leaves(prefix: str) -> None:
    """The newcomer must take about shards/(members+1); capacity bounds add a little reshuffling.

    Naive modulo assignment moves most shards on every change; this must stay close to the ideal.
    """
    ratios = []
    for total in (16, 32, 64, 128):
        for count in range(1, 10):
            group = [f"{prefix}{i}" for i in range(count + 1)]
            before = shards.assign(shards=total, members=group[:-1])
            after = shards.assign(shards=total, members=group)
            ideal = math.ceil(total / (count + 1))
            moved = _moves(before, after)
            assert sum(owner == group[-1] for owner in after.values()) >= total // (count + 1)
            assert moved <= 3 * ideal, (total, count, moved)
            # Leaving is the same change backwards.
            assert _moves(after, before) == moved
            ratios.append(moved / ideal)
    assert sum(ratios) / len(ratios) <= 1.5


def test_a_leaving_member_mostly_hands_over_only_its_own_shards() -> None:
    before = shards.assign(shards=64, members=members(5))
    gone = members(5)[2]
    after = shards.assign(shards=64, members=[m for m in members(5) if m != gone])
    orphaned = [shard for shard, owner in before.items() if owner == gone]
    untouched_moved = [s for s, owner in before.items() if owner != gone and after[s] != owner]
    assert all(after[shard] != gone for shard in orphaned)
    assert len(untouched_moved) <= len(orphaned)


def test_assign_rejects_negative_shards() -> None:
    with pytest.raises(ValueError, match="negative"):
        shards.assign(shards=-1, members=["a"])


@RELAXED
@given(
    total=st.integers(1, 64),
    group=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=8),
    seed=st.randoms(use_true_random=False),
)
def test_assignment_properties(total: int, group: list[str], seed: object) -> None:
    owners = shards.assign(shards=total, members=group)
    unique = set(group)
    assert sorted(owners) == list(range(total))
    assert set(owners.values()) <= unique
    per_member = collections.Counter(owners.values())
    loads = [per_member.get(member, 0) for member in unique]
    assert max(loads) - min(loads) <= 1
    shuffled = list(group)
    seed.shuffle(shuffled)  # type: ignore[attr-defined]
    assert shards.assign(shards=total, members=shuffled) == owners
