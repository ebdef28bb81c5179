"""Wire everything together, run until told to stop, stop cleanly.

Threads: one per watch stream (CTJs, Jobs, and each shared resource stream), ``workers`` reconcile
workers, one resync timer, the probe/metrics servers and the webhook server. Shutdown (SIGTERM):
stop taking work, release shard Leases at once (fast handover), close streams, flush traces.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from kubernetes import client as k8s_client

from changejob import settings as settings_mod
from changejob.domain import jobs
from changejob.kube import discovery, transport, watch, writes
from changejob.runtime import ownership, queue, reconciler, registry, stores
from changejob.telemetry import metrics, probes, tracing

log = logging.getLogger(__name__)
CtjKey = tuple[str, str]


class Service(Protocol):
    """Something the manager runs beside the controllers (the admission webhook)."""

    def ready(self) -> bool: ...

    def stop(self) -> None: ...


class Manager:
    def __init__(
        self,
        settings: settings_mod.Settings,
        *,
        api_client: k8s_client.ApiClient | None = None,
        webhook: Callable[[Manager], Service] | None = None,
    ) -> None:
        self.settings = settings
        self.stop_event = threading.Event()
        self.api_client = api_client or transport.load_api_client(
            kubeconfig=settings.kubeconfig, context=settings.context
        )
        self.transport = transport.Transport(self.api_client)
        self.writer = writes.Writer(self.transport, instance=settings.identity)
        self.discovery = discovery.Discovery(self.api_client)
        self.queue: queue.WorkQueue[CtjKey] = queue.WorkQueue()
        self.ownership: ownership.Ownership
        if settings.leader_elect:
            from changejob.runtime import membership  # Lease traffic only when asked for

            self.ownership = membership.LeaseMembership(
                transport_=self.transport, settings=settings, stop=self.stop_event
            )
        else:
            self.ownership = ownership.SoleOwner(shard_count=settings.shards)
        self.ctjs = stores.CtjStore(notify=self._enqueue, accept=self._accepts)
        self.ctjs.on_synced = self._relist_if_wanted
        # Read at scrape time: set from several threads (handover, reconciles), a gauge could be left
        # holding a count computed just before a concurrent change.
        metrics.ctjs.set_function(self.ctjs.count)
        metrics.owned_shards.set_function(lambda: len(self.ownership.owned()))
        metrics.leader.set_function(lambda: 1 if self.ownership.owned() else 0)
        self._relist_wanted = False
        self._ctj_lists_started = False
        self.job_index = stores.JobIndex(notify=self._enqueue)
        self.registry: registry.Registry | None = None
        self.reconciler: reconciler.Reconciler | None = None
        self._threads: list[threading.Thread] = []
        self._servers: list[probes.Server] = []
        self._start_webhook = webhook
        self._webhook: Service | None = None
        self._ctj_watches: list[watch.ListWatch] = []
        self._last_loop = time.monotonic()

    # --- routing ----------------------------------------------------------------------------------
    def _accepts(self, key: CtjKey) -> bool:
        if self.settings.namespaces and key[0] not in self.settings.namespaces:
            return False
        return self.ownership.owns(key)

    def _enqueue(self, key: CtjKey) -> None:
        self.queue.add(key)
        metrics.workqueue_depth.set(len(self.queue))

    def _shards_changed(self, gained: set[int], lost: set[int]) -> None:
        if lost:
            for key in self.ctjs.all_keys():
                if not self.ownership.owns(key):
                    self.ctjs.drop(key)
                    if self.reconciler is not None:
                        self.reconciler.forget(key)
        if gained and self._ctj_lists_started:
            # Newly owned CTJs were filtered out of the store so far: read them now, or, while the
            # first list is still running, as soon as it ends (it may have passed them already).
            # Shards gained before any CTJ list began (a single replica, or a quick first round) need
            # nothing: the first list reads their CTJs anyway.
            self._relist_wanted = True
            self._relist_if_wanted()
        log.info(
            "shards changed: +%s -%s (own %d of %d)",
            sorted(gained),
            sorted(lost),
            len(self.ownership.owned()),
            self.ownership.shards,
        )

    def _relist_if_wanted(self) -> None:
        if not self._relist_wanted or not self.ctjs.synced.is_set():
            return
        self._relist_wanted = False
        try:
            for w in self._ctj_watches:
                self._relist_ctjs(w.path)
        except transport.ApiError as exc:
            log.warning("could not read newly owned CTJs (%s); the next resync tries again", exc)
            self._relist_wanted = True

    def _relist_ctjs(self, path: str) -> None:
        cont = None
        while True:
            page = self.transport.request(
                "GET", path, query={"limit": 500, "continue": cont}, span_resource="changetriggeredjobs"
            )
            for item in page.get("items") or ():
                if self._accepts(stores.CtjStore.key_of(item)):
                    self.ctjs.event("ADDED", item)
            cont = (page.get("metadata") or {}).get("continue")
            if not cont:
                return

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        s = self.settings
        watch.large_buffers_off_heap()  # process-wide: before the first list page is read
        key = self.writer.hash_key(namespace=s.leader_election_namespace)
        self.registry = registry.Registry(
            transport_=self.transport,
            notify=self._enqueue,
            hash_key=key,
            watch_timeout=s.watch_timeout.total_seconds(),
            stall_timeout=s.watch_stall_timeout.total_seconds(),
        )
        self.reconciler = reconciler.Reconciler(
            ctjs=self.ctjs,
            job_index=self.job_index,
            registry_=self.registry,
            discovery_=self.discovery,
            writer=self.writer,
            work=self.queue,
            may_act=self.ownership.may_act,
        )
        self._start_servers()
        self.ownership.start(self._shards_changed)
        paths = [writes.ctj_path(ns) for ns in s.namespaces] if s.namespaces else [writes.ctj_path()]
        self._ctj_lists_started = True  # before any list starts: see _shards_changed
        for path in paths:
            lw = watch.ListWatch(
                transport_=self.transport,
                path=path,
                sink=self.ctjs,
                stop=self.stop_event,
                watch_timeout=s.watch_timeout.total_seconds(),
                stall_timeout=s.watch_stall_timeout.total_seconds(),
                name="ctjs",
            )
            self._ctj_watches.append(lw)
            self._spawn(lw.run, f"watch-ctjs-{path}")
        job_paths = [writes.job_path(ns) for ns in s.namespaces] if s.namespaces else ["/apis/batch/v1/jobs"]
        for path in job_paths:
            jw = watch.ListWatch(
                transport_=self.transport,
                path=path,
                sink=self.job_index,
                stop=self.stop_event,
                label_selector=jobs.OWNER_LABEL,
                watch_timeout=s.watch_timeout.total_seconds(),
                stall_timeout=s.watch_stall_timeout.total_seconds(),
                name="jobs",
            )
            self._job_watch = jw
            self._spawn(jw.run, f"watch-jobs-{path}")
        for i in range(s.workers):
            self._spawn(self._worker, f"worker-{i}")
        self._spawn(self._resync, "resync")
        log.info(
            "kube-changejob started (identity %s, %d shards, leader election %s)",
            s.identity,
            s.shards,
            "on" if s.leader_elect else "off",
        )

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _start_servers(self) -> None:
        s = self.settings
        if s.metrics_bind_address not in ("0", ""):
            server = probes.Server(s.metrics_bind_address, metrics=True, probes=False)
            self._servers.append(server)
        if s.health_probe_bind_address not in ("0", ""):
            server = probes.Server(s.health_probe_bind_address, metrics=False, probes=True)
            self._servers.append(server)
        for server in self._servers:
            server.add_liveness("workers", lambda: time.monotonic() - self._last_loop < 120)
            server.add_readiness("ctjs-synced", lambda: all(w.synced.is_set() for w in self._ctj_watches))
            server.add_readiness("jobs-synced", self.job_index.synced.is_set)
            server.add_readiness("watches-synced", lambda: self.registry is not None and self.registry.synced())
            server.add_readiness("shards-joined", self.ownership.joined)
            server.start()
        if s.webhook_port and self._start_webhook is not None:
            self._webhook = self._start_webhook(self)
            for server in self._servers:
                server.add_readiness("webhook", self._webhook.ready)

    def ready(self) -> bool:
        return (
            all(w.synced.is_set() for w in self._ctj_watches)
            and self.job_index.synced.is_set()
            and self.registry is not None
            and self.registry.synced()
            and self.ownership.joined()
        )

    @property
    def probe_ports(self) -> list[int]:
        return [s.port for s in self._servers]

    def _worker(self) -> None:
        assert self.reconciler is not None
        while not self.stop_event.is_set():
            self._last_loop = time.monotonic()
            key = self.queue.get(timeout=5.0)
            if key is None:
                continue
            try:
                self.reconciler.reconcile(key)
            except Exception:
                metrics.reconcile_errors_total.inc()
                log.exception("reconcile failed; retrying", extra={"ctj": f"{key[0]}/{key[1]}"})
                self.queue.add_after(key, 2.0)
            finally:
                self.queue.done(key)
                metrics.workqueue_depth.set(len(self.queue))

    def _resync(self) -> None:
        """Safety net: every poll interval, re-check every owned CTJ from memory (no API calls).

        Resync keys queue behind changes (``add_background``), so a change arriving during the resync
        of 10 000 CTJs is handled next, not after them.
        """
        period = self.settings.poll_interval.total_seconds()
        while not self.stop_event.wait(period):
            self._relist_if_wanted()
            for key in self.ctjs.all_keys():
                self.queue.add_background(key)
            metrics.workqueue_depth.set(len(self.queue))

    def run(self) -> None:
        self.start()
        try:
            while not self.stop_event.wait(1.0):
                pass
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        log.info("shutting down")
        self.stop_event.set()
        self.queue.close()
        self.ownership.stop()
        self.writer.flush_events()
        if self.registry is not None:
            self.registry.stop()
        for server in self._servers:
            server.stop()
        if self._webhook is not None:
            self._webhook.stop()
        tracing.shutdown()
