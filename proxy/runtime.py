"""Runtime: every long-lived component, built and torn down in the app's lifespan.

Nothing here is module-level: tests build as many runtimes as they like, side by side.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import proxy.store.queries as queries
from proxy.cascade import summarize
from proxy.escalation.service import Escalations
from proxy.failures import FailureLog
from proxy.forward import Forwarder, make_forwarder
from proxy.graph.bus import RedisGraphBus
from proxy.graph.identity import AgentDirectory, Identifier
from proxy.graph.index import MemoryLineageIndex
from proxy.graph.linker import Linker
from proxy.graph.runs import RunResolver
from proxy.graph.threads import ChainCache
from proxy.graphowner import GraphClient, GraphOwner, SharedRunResolver, process_id
from proxy.guards.chain import GuardChain
from proxy.guards.counters import make_counter_store
from proxy.labelcap import LabelCap
from proxy.memory import MemoryPlan
from proxy.pipeline import Observer, Pipeline, RunsClosed
from proxy.pricing import PriceTable
from proxy.providers import Router
from proxy.redact import mask_url
from proxy.relay import Relay
from proxy.rules import RuleSet, RulesManager
from proxy.settings import Settings
from proxy.store.db import SqlSink, make_engine, upgrade
from proxy.store.retention import Retention, RetentionPolicy
from proxy.store.spool import Spool
from proxy.store.wal import WriteAheadLog
from proxy.store.writer import BatchWriter
from proxy.telemetry import Metrics
from proxy.tokens import TokenCounter, load_counter
from proxy.tracing import RunTracer, make_run_tracer

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("interlock")


class Runtime:
    def __init__(self, settings: Settings, router: Router, *, transport: httpx.AsyncBaseTransport | None = None,
                 migrate: bool = True) -> None:
        self.settings = settings
        self.memory = MemoryPlan.from_settings(settings)  # every cache and queue bound (INTERLOCK_MEMORY_MB)
        self.router = router
        self.transport = transport
        self.migrate = migrate
        self.relay: Relay | None = None
        self.engine: Any = None
        self.writer: Any = None
        self.wal: WriteAheadLog | None = None
        self.retention: Retention | None = None
        self.pipeline: Pipeline | None = None
        self.forwarder: Forwarder | None = None
        self.tokens: Any = None
        self.rules: RulesManager | None = None
        self.counters: Any = None
        self.escalations: Escalations | None = None
        self.tracer: RunTracer | None = None
        self._prices: tuple[Any, PriceTable] | None = None
        self._retry: asyncio.Task[None] | None = None
        self._db_failures = FailureLog(
            log, f"database {mask_url(settings.database_url)}", traceback=False,
            hint=f"serving anyway; records go to the spool in {settings.spool_dir} and are written once it is back")
        self.metrics: Metrics | None = None
        self.linker: Linker | None = None
        self.resolver: RunResolver | None = None
        self.index: MemoryLineageIndex | None = None
        self.peer_metrics: Any = None  # with --workers N: /metrics merged across the workers
        self.graph_bus: RedisGraphBus | None = None
        self.graph_client: GraphClient | None = None
        self.graph_owner: GraphOwner | None = None
        self.shared_resolver: SharedRunResolver | None = None

    @property
    def worker_index(self) -> int:
        """This process's slot under `interlock serve --workers N` (0 in a single process)."""
        return self.settings.worker.index if self.settings.worker is not None else 0

    @property
    def leader(self) -> bool:
        """True in exactly one process per `interlock serve` (worker 0): jobs that must run once
        per process group (retention sweeps) start only here.  Across replicas each has its
        own leader; jobs that must run once cluster-wide need a shared lock besides."""
        return self.worker_index == 0

    async def scrape_metrics(self) -> bytes:
        """/metrics text: this process's, or every worker's merged (proxy/worker.py)."""
        if self.peer_metrics is not None:
            return bytes(await self.peer_metrics())
        return await self.metrics.scrape() if self.metrics is not None else b""

    async def start(self) -> None:
        s = self.settings
        if self.migrate and not await self._upgrade():
            self._retry = asyncio.create_task(self._upgrade_until_done(), name="interlock-db-upgrade")
        self.engine = make_engine(s.database_url)
        spool = Spool(s.spool_dir)
        self.wal = self._wal(spool)
        self.writer = BatchWriter(
            SqlSink(self.engine),
            spool,
            queue_size=s.writer_queue_size,
            queue_max_bytes=self.memory.writer_queue_bytes,
            batch_size=s.writer_batch_size,
            flush_interval=s.writer_flush_interval_s,
            write_timeout=s.writer_timeout_s,
            journal=self.wal,
        )
        self.writer.start()
        self.retention = Retention(self.engine, RetentionPolicy(
            metadata_days=s.retention_days, content_days=s.content_retention_days,
            batch_size=s.retention_batch_size, interval_s=s.retention_interval_s))
        if self.leader:  # one sweep per process group: the others would only repeat its deletes
            self.retention.start()  # a no-op unless a retention setting is given
        self.tokens = self._token_counter()
        self.rules = await self._rules()
        await self._graph()
        self.metrics = Metrics(self, LabelCap(s.metric_label_limit))
        if s.worker is not None and s.worker.count > 1:
            from proxy.worker import PeerMetrics

            self.peer_metrics = PeerMetrics(s.worker, self.metrics.scrape)
        self.escalations = Escalations.connect(
            self.engine, self.counters, self._ruleset, self.writer.submit, otlp_endpoint=s.otlp_endpoint,
            meter=self.metrics.provider.get_meter("interlock.escalations"), sync_s=s.escalation_sync_s)
        await self.escalations.start()  # reloads open escalations, re-arms clocks and holds
        observers: list[Observer] = [self.metrics.on_recorded, self.escalations.observe]
        self.tracer = make_run_tracer(s)  # None unless INTERLOCK_OTLP_ENDPOINT is set
        closers: list[RunsClosed] = []
        if self.tracer is not None:
            observers.append(self.tracer.on_call)
            closers.append(self.tracer.on_runs_closed)
        self.pipeline = Pipeline(self.writer, policy=s.content_policy, max_bytes=s.content_max_bytes,
                                 linker=self.linker, observers=observers, on_runs_closed=closers,
                                 prices=self.price_table, max_queued_bytes=self.memory.pipeline_queue_bytes,
                                 answered=self.wal.answered if self.wal is not None else None,
                                 remote=self.graph_client, link_timeout_s=s.graph_link_timeout_s)
        await self.pipeline.start()
        await self._share_graph()
        self.forwarder = make_forwarder(s, self.transport)
        self.relay = Relay(
            s,
            self.router,
            self.forwarder,
            self.pipeline.submit,
            guards=self._chain,
            tokens=self.tokens,
            runs=self.shared_resolver or self.resolver,
            metrics=self.metrics,
        )

    def _wal(self, spool: Spool) -> WriteAheadLog | None:
        """The write-ahead log, its leftovers handed to the spool for replay, its thread started."""
        s = self.settings
        if not s.wal:
            return None
        wal = WriteAheadLog(s.wal_path, interval_s=s.wal_fsync_interval_ms / 1000.0)
        wal.recover(spool)
        wal.start()
        return wal

    async def _upgrade(self) -> bool:
        """Apply migrations; False (logged once, then at a backoff) when the database cannot be reached."""
        try:
            await asyncio.to_thread(upgrade, self.settings.database_url)
        except Exception as exc:
            self._db_failures.failed(exc)
            return False
        self._db_failures.succeeded()
        return True

    async def _upgrade_until_done(self, every_s: float = 5.0) -> None:
        while True:
            await asyncio.sleep(every_s)
            if await self._upgrade():
                return

    def run_extras(self, run: dict[str, Any], calls: list[dict[str, Any]]) -> dict[str, Any]:
        """Extra facts for /api/runs/{id}: cascade root causes and blast radius."""
        return summarize(calls)

    def price_table(self) -> PriceTable:
        """Default prices plus the active rules' `pricing:` overrides (rebuilt after a reload)."""
        pricing = self.rules.rules.pricing if self.rules is not None else {}
        if self._prices is None or self._prices[0] is not pricing:
            self._prices = (pricing, PriceTable(pricing))
        return self._prices[1]

    def _chain(self) -> GuardChain | None:
        return self.rules.chain if self.rules is not None else None

    def _ruleset(self) -> RuleSet:
        return self.rules.rules if self.rules is not None else RuleSet()

    def _token_counter(self) -> TokenCounter:
        return load_counter(self.settings.encodings_dir, log.warning, history_chars=self.memory.token_history_chars)

    async def _rules(self) -> RulesManager:
        self.counters = await make_counter_store(self.settings.redis_url, timeout_s=self.settings.redis_timeout_s)
        manager = RulesManager.from_settings(self.settings, counters=self.counters,
                                             fingerprint_chars=self.memory.fingerprint_chars)
        await manager.start()
        return manager

    async def _graph(self) -> None:
        """One lineage index and agent directory, shared by the request-path resolver and the linker."""
        s = self.settings
        try:
            names = await queries.agent_names(self.engine)
        except Exception:  # database down at start: names are pure functions of fingerprints anyway
            names = {}
        self.index = MemoryLineageIndex(max_calls=self.memory.lineage_calls)
        directory = AgentDirectory(names=names, aliases=s.agent_aliases, claims=self.index)
        identifier = Identifier(directory)
        chains = ChainCache(max_chars=self.memory.chain_chars)  # one per process: the linker and the resolver hash the same messages
        self.linker = Linker(self.index, run_idle_s=s.run_idle_s, identifier=identifier, chains=chains)
        self.resolver = RunResolver(
            self.index, identifier, run_idle_s=s.run_idle_s, chains=chains, placer=self.linker
        )
        if s.redis_url and s.graph_shared:
            self.graph_bus = RedisGraphBus.from_url(s.redis_url, prefix=s.graph_prefix, max_len=s.graph_log_max)
            me = process_id()
            self.graph_client = GraphClient(self.graph_bus, me=me, place_timeout_s=s.graph_place_timeout_ms / 1000)
            self.graph_owner = self._owner(me, names)

    def _owner(self, me: str, names: dict[str, str]) -> GraphOwner:
        """The owner's own linker, index and resolver (used only while this process holds the lease)."""
        s = self.settings
        assert self.graph_bus is not None
        index = MemoryLineageIndex()
        identifier = Identifier(AgentDirectory(names=names, aliases=s.agent_aliases, claims=index))
        chains = ChainCache()
        linker = Linker(index, run_idle_s=s.run_idle_s, identifier=identifier, chains=chains)
        resolver = RunResolver(index, identifier, run_idle_s=s.run_idle_s, chains=chains, placer=linker)
        return GraphOwner(self.graph_bus, me=me, linker=linker, resolver=resolver,
                          submit=lambda record: self.writer.submit(record), lease_ms=s.graph_lease_ms)

    async def _share_graph(self) -> None:
        """With a shared graph: the request path asks the owner, the pipeline waits for its links."""
        if self.graph_client is None or self.graph_owner is None or self.pipeline is None:
            return
        self.graph_client.sink = self.pipeline
        await self.graph_client.start()
        await self.graph_owner.start()
        assert self.resolver is not None
        self.shared_resolver = SharedRunResolver(self.resolver, self.graph_client)

    async def aclose(self) -> None:
        self.relay = None
        if self._retry is not None:
            self._retry.cancel()
        if self.forwarder is not None:
            await self.forwarder.aclose()
        if self.graph_client is not None:  # first: what this process answered reaches the log
            await self.graph_client.flush()
        if self.peer_metrics is not None:
            await self.peer_metrics.aclose()
        if self.pipeline is not None:
            await self.pipeline.aclose()  # waits a little for the owner's last answers
        if self.graph_client is not None:
            await self.graph_client.aclose()
        if self.graph_owner is not None:
            await self.graph_owner.aclose()
        if self.graph_bus is not None:
            await self.graph_bus.aclose()
        if self.tracer is not None:
            await self.tracer.aclose()  # after the pipeline drained: open runs go out as partial
        if self.escalations is not None:
            await self.escalations.aclose()
        if self.rules is not None:
            await self.rules.aclose()
        if self.counters is not None:
            await self.counters.aclose()
        if self.retention is not None:
            await self.retention.aclose()
        if self.writer is not None:
            await self.writer.aclose(timeout=10.0)
        if self.wal is not None:  # after the writer: what it wrote or spooled is released
            await asyncio.to_thread(self.wal.close)
        if self.engine is not None:
            await self.engine.dispose()
