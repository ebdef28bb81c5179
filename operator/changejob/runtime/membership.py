"""Lease-based shard ownership for 1..N replicas (``--leader-elect=true``).

CTJs are spread over ``--shards`` shards (``shards.shard_of``); each shard is owned by one replica.

Leases (coordination.k8s.io/v1, in ``--leader-election-namespace``; see ``kube/leases.py``):

- Every replica holds a *member* Lease ``kube-changejob-member-<identity>`` and renews it every retry
  period. This is the only steady-state Lease traffic: one write per replica per retry period,
  whatever the number of shards.
- Shard ``n`` has a Lease ``kube-changejob-shard-<n>`` whose ``holderIdentity`` names its owner. It
  is written only on handover (acquire, release), so ``kubectl get leases`` shows who owns what.

One round, every retry period, in one thread:

1. Renew the member Lease. Once no renewal has succeeded for ``renew_deadline`` (of local monotonic
   time) every shard is dropped, between rounds too: a replica that was partitioned or paused
   (SIGSTOP) longer than that resumes owning nothing and re-acquires only through the steps below,
   after a fresh list.
2. List the member and shard Leases (one request, label ``changejob.dev/role``). A list rather than a
   watch: with 3 replicas and 16 shards it is 19 small objects (~15 KB, ~5 ms), and every decision
   is taken on a fresh, consistent read instead of a cache that may lag after a reconnect.
3. Live members: member Leases whose resourceVersion changed less than their leaseDurationSeconds ago,
   *as observed on the local monotonic clock* (client-go's rule: remember when a given version was
   first seen; remote timestamps are never compared with the local clock). A member seen for the first
   time counts as live for a full lease duration.
4. ``desired = shards.assign(members=live)`` (deterministic for a member set, balanced ±1).
5. Shards held (by the Lease record) but desired by another member: stop acting on them
   (``on_change(lost)``) and release them (holderIdentity cleared) at once, so the new owner can take
   them in its next round. Shards desired here whose holder is empty, this replica, or not a live
   member: acquire (an update carrying the listed resourceVersion; a conflict is re-read next round).
   A shard held by another live member is left alone until that member releases it.

Safety: ``may_act`` is True only for a held shard while the member Lease was renewed within
``renew_deadline``, and peers wait ``lease_duration`` (> renew_deadline) of their own time after the
last renewal they saw before taking the shard, so a replica stops acting before anyone else starts —
unless clocks run at very different rates. Job names are deterministic, so even then a duplicate Job
cannot be created.

``stop()`` (SIGTERM) stops acting, releases every held shard Lease and deletes the member Lease, so
peers take over within one or two retry periods (a rebalance between the survivors is a release in
one round and an acquire in the next) instead of a lease duration. The live member with the smallest
identity deletes member Leases that expired (a SIGKILLed replica's), so they don't pile up.

Identities must be unique (the default is the pod name): two processes with one identity would
share one member Lease and both believe they hold the same shards.

The kubernetes client's ``leaderelection`` package is not used: it elects one leader per process,
builds its API object from the global default configuration, has no release on shutdown and blocks
in sleeps. This module is the minimum needed for several Leases per process, an explicit client and
fast handover.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from changejob import settings as settings_mod
from changejob.domain import api, shards
from changejob.kube import leases, transport
from changejob.runtime import ownership

log = logging.getLogger(__name__)

Clock = Callable[[], float]
WallClock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _ignore(gained: set[int], lost: set[int]) -> None:
    del gained, lost


@dataclass
class _Seen:
    """When (local monotonic time) a member Lease was first seen at its current resourceVersion."""

    version: str
    at: float


class LeaseMembership:
    """Owns the shards a Lease-based assignment gives this replica (see the module docstring)."""

    def __init__(
        self,
        *,
        transport_: transport.Transport,
        settings: settings_mod.Settings,
        stop: threading.Event,
        clock: Clock = time.monotonic,
        wall: WallClock = _utc_now,
    ) -> None:
        self.shards = settings.shards
        self.identity = settings.identity
        self.lease_duration = settings.leader_elect_lease_duration.total_seconds()
        self.renew_deadline = settings.leader_elect_renew_deadline.total_seconds()
        self.retry_period = settings.leader_elect_retry_period.total_seconds()
        half = self.renew_deadline / 2
        self._leases = leases.Leases(
            transport_, namespace=settings.leader_election_namespace, timeout=(min(half, 5.0), half)
        )
        self._stop = stop
        self._closing = threading.Event()
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()  # one round at a time; stop() waits for a running round
        self._on_change: ownership.ShardsChanged = _ignore
        self._thread: threading.Thread | None = None
        self._joined = threading.Event()
        self._stopped = False
        # Read by worker threads without the lock: each is replaced whole, never mutated.
        self._owned: frozenset[int] = frozenset()
        self._renewed_at: float | None = None
        # Used by the membership thread (and stop(), after it) only.
        self._member: leases.Lease | None = None
        self._held: dict[int, leases.Lease] = {}
        self._seen: dict[str, _Seen] = {}

    # --- the Ownership protocol -------------------------------------------------------------------
    def start(self, on_change: ownership.ShardsChanged) -> None:
        self._on_change = on_change
        self._thread = threading.Thread(target=self._run, name="membership", daemon=True)
        self._thread.start()

    def owns(self, key: api.CtjKey) -> bool:
        return ownership.shard_of(key, self.shards) in self._owned

    def may_act(self, key: api.CtjKey) -> bool:
        return self.owns(key) and self._fresh() and not self._stop.is_set() and not self._stopped

    def joined(self) -> bool:
        return self._joined.is_set()

    def owned(self) -> set[int]:
        return set(self._owned)

    def stop(self) -> None:
        """Stop acting, release every held shard Lease and delete the member Lease."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=self.renew_deadline + 1.0)
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._set_owned(frozenset())
            for shard, lease in sorted(self._held.items()):
                self._release(shard, lease, reread=True)
            self._delete_member()
        log.info("left the membership: shard Leases released, member Lease deleted")

    # --- the loop ---------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._halted():
            began = self._clock()
            with self._lock:
                if self._halted():
                    return
                try:
                    self._round()
                except Exception:  # the loop must survive anything; the next round starts afresh
                    log.exception("membership round failed")
            self._sleep(until=began + self.retry_period)

    def _halted(self) -> bool:
        return self._stop.is_set() or self._closing.is_set()

    def _sleep(self, *, until: float) -> None:
        """Wait for the next round; drop the shards at once if the renew deadline passes meanwhile."""
        while (left := until - self._clock()) > 0 and not self._halted():
            trusted = self.trusted_until()
            if self._owned and trusted is not None:
                if trusted <= self._clock():
                    with self._lock:
                        self._drop_if_stale()
                    continue
                left = min(left, trusted - self._clock())
            self._closing.wait(max(0.0, min(left, 0.25)))

    def _drop_if_stale(self) -> None:
        if self._owned and not self._fresh():
            log.warning("member Lease not renewed for %.1fs: dropping all shards", self.renew_deadline)
            self._set_owned(frozenset())

    def _round(self) -> None:
        self._drop_if_stale()
        if not self._renew():
            return
        try:
            snapshot = self._leases.snapshot()
        except transport.ApiError as exc:
            log.warning("cannot list Leases: %s", exc)
            return
        live = self._live(snapshot.members, now=self._clock())
        live.add(self.identity)
        desired = shards.assign(shards=self.shards, members=sorted(live))
        self._held = {
            n: lease
            for n, lease in snapshot.shards.items()
            if n < self.shards and leases.holder(lease) == self.identity
        }
        keep = frozenset(n for n in self._owned if n in self._held and desired.get(n) == self.identity)
        self._set_owned(keep)
        for shard, lease in sorted(self._held.items()):
            if desired.get(shard) != self.identity:
                self._release(shard, lease, reread=False)
        self._acquire_desired(desired=desired, live=live, current=snapshot.shards)
        self._collect_expired(snapshot.members, live=live)
        self._joined.set()

    # --- membership -------------------------------------------------------------------------------
    def trusted_until(self) -> float | None:
        """The local monotonic time until which held shards may be acted on (None: not a member).

        The last successful renewal of the member Lease (the time its request was sent) plus the
        renew deadline; ``may_act`` is False from then on until a renewal succeeds again.
        """
        renewed = self._renewed_at
        return None if renewed is None else renewed + self.renew_deadline

    def _fresh(self) -> bool:
        trusted = self.trusted_until()
        return trusted is not None and self._clock() < trusted

    def _renew(self) -> bool:
        """Write the member Lease (create it if needed); True if this replica's membership is fresh."""
        began = self._clock()
        now = self._wall()
        try:
            if self._member is None:
                self._member = self._create_or_renew(now)
            else:
                try:
                    self._member = self._leases.update(
                        leases.renewed(self._member, duration=self.lease_duration, now=now)
                    )
                except transport.ApiError as exc:
                    if not (exc.conflict or exc.not_found):
                        raise
                    self._member = self._create_or_renew(now)
        except transport.ApiError as exc:
            log.warning("cannot renew member Lease: %s", exc)
            return False
        self._renewed_at = began
        return True

    def _create_or_renew(self, now: datetime) -> leases.Lease:
        existing = self._leases.get(leases.member_name(self.identity))
        if existing is None:
            return self._leases.create(
                leases.member_body(
                    namespace=self._leases.namespace, identity=self.identity, duration=self.lease_duration, now=now
                )
            )
        return self._leases.update(
            leases.taken(existing, identity=self.identity, duration=self.lease_duration, now=now)
        )

    def _live(self, members: Iterable[leases.Lease], *, now: float) -> set[str]:
        """Identities whose member Lease changed within its duration, by local observation."""
        live: set[str] = set()
        names: set[str] = set()
        for lease in members:
            name = leases.name_of(lease)
            names.add(name)
            version = leases.resource_version(lease)
            seen = self._seen.get(name)
            if seen is None or seen.version != version:
                seen = self._seen[name] = _Seen(version=version, at=now)
            holder = leases.holder(lease)
            if holder and now - seen.at < leases.lease_seconds(lease, self.lease_duration):
                live.add(holder)
        for name in set(self._seen) - names:
            del self._seen[name]
        return live

    def _collect_expired(self, members: Iterable[leases.Lease], *, live: set[str]) -> None:
        """Delete expired member Leases (one live member does it: the one with the smallest identity)."""
        if min(live) != self.identity:
            return
        for lease in members:
            if leases.holder(lease) in live:
                continue
            log.info("deleting expired member Lease %s", leases.name_of(lease))
            try:
                self._leases.delete(lease)
            except transport.ApiError as exc:
                log.info("expired member Lease %s not deleted: %s", leases.name_of(lease), exc)

    def _delete_member(self) -> None:
        if self._member is None:
            return
        try:
            try:
                self._leases.delete(self._member)
            except transport.ApiError as exc:
                if not exc.conflict:
                    raise
                current = self._leases.get(leases.name_of(self._member))
                if current is not None and leases.holder(current) == self.identity:
                    self._leases.delete(current)
        except transport.ApiError as exc:
            log.warning("cannot delete member Lease: %s", exc)
        self._member = None
        self._renewed_at = None

    # --- shards -----------------------------------------------------------------------------------
    def _acquire_desired(self, *, desired: dict[int, str], live: set[str], current: dict[int, leases.Lease]) -> None:
        gained: set[int] = set()
        for shard in range(self.shards):
            if desired.get(shard) != self.identity or shard in self._owned:
                continue
            holder = leases.holder(current.get(shard))
            if holder and holder != self.identity and holder in live:
                continue  # its owner releases it once it sees the same assignment
            if not self._fresh() or self._halted():
                break
            if self._acquire(shard, current.get(shard)):
                gained.add(shard)
        if gained:
            self._set_owned(self._owned | gained)

    def _acquire(self, shard: int, lease: leases.Lease | None) -> bool:
        now = self._wall()
        try:
            if lease is None:
                out = self._leases.create(
                    leases.shard_body(
                        namespace=self._leases.namespace,
                        shard=shard,
                        identity=self.identity,
                        duration=self.lease_duration,
                        now=now,
                    )
                )
            else:
                out = self._leases.update(
                    leases.taken(lease, identity=self.identity, duration=self.lease_duration, now=now)
                )
        except transport.ApiError as exc:
            if not (exc.conflict or exc.already_exists or exc.not_found):
                log.warning("cannot acquire shard %d: %s", shard, exc)
            return False
        self._held[shard] = out
        return True

    def _release(self, shard: int, lease: leases.Lease, *, reread: bool) -> None:
        """Clear the holder of ``shard``'s Lease; on a conflict re-read it first if ``reread``."""
        try:
            try:
                self._leases.update(leases.released(lease, now=self._wall()))
            except transport.ApiError as exc:
                if not (reread and exc.conflict):
                    raise
                current = self._leases.get(leases.name_of(lease))
                if current is not None and leases.holder(current) == self.identity:
                    self._leases.update(leases.released(current, now=self._wall()))
        except transport.ApiError as exc:
            if not exc.not_found:
                log.warning("cannot release shard %d: %s", shard, exc)
            return
        finally:
            self._held.pop(shard, None)

    def _set_owned(self, owned: frozenset[int]) -> None:
        """Replace the owned set and tell the manager what changed (lost shards before any release)."""
        gained, lost = set(owned - self._owned), set(self._owned - owned)
        if not gained and not lost:
            return
        self._owned = owned
        log.info("shards: +%s -%s (own %d of %d)", sorted(gained), sorted(lost), len(owned), self.shards)
        try:
            self._on_change(gained, lost)
        except Exception:
            log.exception("shard change handler failed")
