"""Which CTJs this replica may act on.

``SoleOwner`` is used with leader election off: one replica owns every shard. The Lease-based
``membership.LeaseMembership`` implements the same protocol for 1..N replicas.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from changejob.domain import api, shards

ShardsChanged = Callable[[set[int], set[int]], None]


class Ownership(Protocol):
    shards: int

    def start(self, on_change: ShardsChanged) -> None: ...

    def owns(self, key: api.CtjKey) -> bool:
        """Whether this replica owns ``key``'s shard (a cheap, in-memory check)."""

    def may_act(self, key: api.CtjKey) -> bool:
        """``owns`` and the ownership is fresh (renewed within the renew deadline): checked before writes."""

    def joined(self) -> bool: ...

    def owned(self) -> set[int]: ...

    def stop(self) -> None: ...


class SoleOwner:
    """Owns everything, always."""

    def __init__(self, *, shard_count: int) -> None:
        self.shards = shard_count

    def start(self, on_change: ShardsChanged) -> None:
        on_change(set(range(self.shards)), set())

    def owns(self, key: api.CtjKey) -> bool:
        del key
        return True

    def may_act(self, key: api.CtjKey) -> bool:
        del key
        return True

    def joined(self) -> bool:
        return True

    def owned(self) -> set[int]:
        return set(range(self.shards))

    def stop(self) -> None:
        return None


def shard_of(key: api.CtjKey, shard_count: int) -> int:
    return shards.shard_of(namespace=key[0], name=key[1], shards=shard_count)
