"""Sharding: which shard a CTJ belongs to, and which replica owns which shard.

CTJs map to a fixed number of shards by a stable hash of ``namespace/name``. Shards map to the
replicas currently alive by rendezvous (highest-random-weight) hashing with a capacity bound: each
(shard, member) pair gets a pseudo-random score, and pairs are granted best score first while the
member still has room. The result depends only on the set of members, gives every member
``floor`` or ``ceil`` of ``shards / members``, and when one member joins or leaves, most shards keep
their owner (each shard's preference list is independent of the other members).
"""

from __future__ import annotations

from collections.abc import Sequence

import xxhash

__all__ = ["assign", "shard_of"]


def shard_of(*, namespace: str, name: str, shards: int) -> int:
    """The shard of the CTJ ``namespace/name``: xxh3-64 of ``"namespace/name"`` modulo ``shards``."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    return xxhash.xxh3_64_intdigest(f"{namespace}/{name}".encode()) % shards


def _score(shard: int, member: str) -> int:
    return xxhash.xxh3_64_intdigest(f"{shard}\x00{member}".encode())


def assign(*, shards: int, members: Sequence[str]) -> dict[int, str]:
    """Owner of each shard ``0..shards-1`` among ``members``; ``{}`` when there are no members.

    Deterministic for a given set of members (order and duplicates do not matter) and balanced:
    ``extra = shards % len(members)`` members own ``shards // len(members) + 1`` shards and the
    others ``shards // len(members)``.
    """
    if shards < 0:
        raise ValueError(f"shards must not be negative, got {shards}")
    unique = sorted(set(members))
    if not unique or not shards:
        return {}
    base, extra = divmod(shards, len(unique))
    # Every pair, best score first; ties (vanishingly rare) broken by member then shard.
    pairs = sorted(
        ((_score(shard, member), member, shard) for shard in range(shards) for member in unique),
        key=lambda pair: (-pair[0], pair[1], pair[2]),
    )
    owned = dict.fromkeys(unique, 0)
    full_at_ceiling = 0  # members already holding base + 1 shards
    owners: dict[int, str] = {}
    for _, member, shard in pairs:
        if shard in owners:
            continue
        count = owned[member]
        if count < base or (count == base and full_at_ceiling < extra):
            owners[shard] = member
            owned[member] = count + 1
            if count == base:
                full_at_ceiling += 1
            if len(owners) == shards:
                break
    return dict(sorted(owners.items()))
