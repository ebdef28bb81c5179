"""Wire everything together, run until told to stop, stop cleanly.

Threads: one per watch stream (CTJs, Jobs, and each shared resource stream), ``workers`` reconcile
workers (``controller.Controller``), one resync timer, the probe/metrics servers and the webhook
server. Shutdown (SIGTERM): stop taking work, release shard Leases at once (fast handover), close
streams, flush traces. A shard handover is handled here: lost shards' CTJs are dropped from memory,
gained shards' CTJs are listed again (the CTJ watch filtered them out so far).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from kubernetes import client as k8s_client

from changejob import settings as settings_mod
from changejob.domain import api, jobs
from changejob.kube import discovery, resources, transport, watch, writes
from changejob.runtime import controller, executor, ownership, queue, reconciler, stores, subscriptions
from changejob.telemetry import metrics, probes, tracing

log = logging.getLogger(__name__)


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
        transport_: transport.Transport | None = None,
        webhook: Callable[[Manager], Service] | None = None,
    ) -> None:
        self.settings = settings
        self.stop_event = threading.Event()
        if transport_ is None:
            transport_ = transport.Transport(
                api_client or transport.load_api_client(kubeconfig=settings.kubeconfig, context=settings.context)
            )
        self.transport = transport_
        self.api_client = transport_.api_client
        self.writer = writes.Writer(self.transport, instance=settings.identity)
        self.discovery = discovery.Discovery(self.transport)
        self.queue: queue.WorkQueue[api.CtjKey] = queue.WorkQueue(depth_gauge=metrics.workqueue_depth)
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
        self.subscriptions: subscriptions.Subscriptions | None = None
        self.reconciler: reconciler.Reconciler | None = None
        self.controller: controller.Controller[api.CtjKey] | None = None
        self._threads: list[threading.Thread] = []
        self._servers: list[probes.Server] = []
        self._start_webhook = webhook
        self._webhook: Service | None = None
        self._ctj_watches: list[watch.ListWatch] = []

    # --- routing ----------------------------------------------------------------------------------
    def _accepts(self, key: api.CtjKey) -> bool:
        if self.settings.namespaces and key[0] not in self.settings.namespaces:
            return False
        return self.ownership.owns(key)

    def _enqueue(self, key: api.CtjKey) -> None:
        self.queue.add(key)

    def _forget(self, key: api.CtjKey) -> None:
        self.ctjs.drop(key)
        if self.reconciler is not None:
            self.reconciler.forget(key)
        if self.controller is not None:
            self.controller.forget(key)

    def _shards_changed(self, gained: set[int], lost: set[int]) -> None:
        if lost:
            for key in self.ctjs.all_keys():
                if not self.ownership.owns(key):
                    self._forget(key)
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
        for page in self.transport.list_pages(path, span_resource=resources.CTJ.plural):
            watch.hand_over(page.items, self._relisted)

    def _relisted(self, item: Mapping[str, Any]) -> None:
        if self._accepts(stores.CtjStore.key_of(item)):
            self.ctjs.event("ADDED", item)

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        s = self.settings
        watch.large_buffers_off_heap()  # process-wide: before the first list page is read
        self._build(hash_key=self.writer.hash_key(namespace=s.leader_election_namespace))
        self._start_servers()
        self.ownership.start(self._shards_changed)
        namespaces: list[str | None] = list(s.namespaces) if s.namespaces else [None]
        self._ctj_lists_started = True  # before any list starts: see _shards_changed
        for ns in namespaces:
            lw = self._listwatch(resources.CTJ.path(ns), self.ctjs, name="ctjs")
            self._ctj_watches.append(lw)
            self._spawn(lw.run, f"watch-ctjs-{lw.path}")
        for ns in namespaces:
            jw = self._listwatch(resources.JOB.path(ns), self.job_index, name="jobs", label_selector=jobs.OWNER_LABEL)
            self._spawn(jw.run, f"watch-jobs-{jw.path}")
        assert self.controller is not None
        for i in range(s.workers):
            self._spawn(functools.partial(self.controller.run, self.stop_event), f"worker-{i}")
        self._spawn(self._resync, "resync")
        log.info(
            "kube-changejob started (identity %s, %d shards, leader election %s)",
            s.identity,
            s.shards,
            "on" if s.leader_elect else "off",
        )

    def _build(self, *, hash_key: bytes | None) -> None:
        """The subscriptions, the reconciler and its executor, the controller (no thread started)."""
        s = self.settings
        self.subscriptions = subscriptions.Subscriptions(
            transport_=self.transport,
            notify=self._enqueue,
            hash_key=hash_key,
            watch_timeout=s.watch_timeout.total_seconds(),
            stall_timeout=s.watch_stall_timeout.total_seconds(),
        )
        self.reconciler = reconciler.Reconciler(
            ctjs=self.ctjs,
            job_index=self.job_index,
            subscriptions_=self.subscriptions,
            executor_=executor.Executor(
                writer=self.writer,
                discovery_=self.discovery,
                ctjs=self.ctjs,
                job_index=self.job_index,
                subscriptions_=self.subscriptions,
                may_act=self.ownership.may_act,
            ),
            owns=self.ownership.owns,
        )
        self.controller = controller.Controller(work=self.queue, reconcile=self.reconciler.reconcile)

    def _listwatch(
        self, path: str, sink: watch.Sink, *, name: str, label_selector: str | None = None
    ) -> watch.ListWatch:
        s = self.settings
        return watch.ListWatch(
            transport_=self.transport,
            path=path,
            sink=sink,
            stop=self.stop_event,
            label_selector=label_selector,
            watch_timeout=s.watch_timeout.total_seconds(),
            stall_timeout=s.watch_stall_timeout.total_seconds(),
            name=name,
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
            server.add_liveness("workers", self._workers_alive)
            server.add_readiness("ctjs-synced", lambda: all(w.synced.is_set() for w in self._ctj_watches))
            server.add_readiness("jobs-synced", self.job_index.synced.is_set)
            server.add_readiness("watches-synced", self._watches_synced)
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
            and self._watches_synced()
            and self.ownership.joined()
        )

    def _workers_alive(self) -> bool:
        return self.controller is None or time.monotonic() - self.controller.last_loop < 120

    def _watches_synced(self) -> bool:
        return self.subscriptions is not None and self.subscriptions.synced()

    def _resync(self) -> None:
        """Safety net: every poll interval, re-check every owned CTJ from memory (no API calls)."""
        period = self.settings.poll_interval.total_seconds()
        while not self.stop_event.wait(period):
            self.resync_once()

    def resync_once(self) -> None:
        """Queue every owned CTJ behind the changes (``add_background``): a change arriving during the
        resync of 10 000 CTJs is handled next, not after them."""
        self._relist_if_wanted()
        for key in self.ctjs.all_keys():
            self.queue.add_background(key)

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
        if self.subscriptions is not None:
            self.subscriptions.stop()
        for server in self._servers:
            server.stop()
        if self._webhook is not None:
            self._webhook.stop()
        tracing.shutdown()
