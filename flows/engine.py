"""The engine: one bytewax dataflow wired from one module per capability.

```
wifi.probes      -> read_probes       -> decode_probes       (keyed by partition) ┐
pos.transactions -> read_transactions -> decode_transactions (keyed by partition) ┤
                                        (site, SiteBatch) keyed by mall/street store ┘
   -> count_footfall -> minutes, store-hours, visits -> Redis, metrics, [JSONL]
decode_transactions -> route_member_sales (sales naming a member, keyed by member) ┐
members.events -> read_members -> decode_members (keyed by member)                 ┤
   -> update_profiles -> assign_segments -> profiles (loyalty from the catalog), erasures -> Redis ┘
      update_profiles -> purchases, erasures (keyed by store) -> count_repurchase -> Redis, metrics
      update_profiles -> device bindings (keyed by device) ┐
count_footfall -> visits of stable MACs (keyed by device) ┴ resolve_devices -> track_member_visits -> Redis
count_footfall -> closed store minutes (keyed by store) ┐
count_repurchase -> store members (keyed by store)      ┴ watch_sales -> sales buckets, store health,
                                                          alert notices -> metrics, Redis, alerts + webhook
anything invalid or late -> deadletter
```

``build_flow(settings, sources=..., sinks=..., catalog=...)`` lets tests and the demo
inject sources (any bytewax source of ``RawBatch``), sinks and a catalog; by default it
reads Kafka and Redis as the settings say. ``flows.engine:flow`` builds that default from
the environment for ``python -m bytewax.run flows.engine:flow``.

Step ids are the recovery keys of their state: renaming a stateful step
(``decode_probes``, ``decode_transactions``, ``count_footfall``, ``update_profiles``,
``assign_segments``, ``count_repurchase``, ``resolve_devices``, ``track_member_visits``,
``watch_sales``)
orphans its snapshots.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeGuard, runtime_checkable

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import FixedPartitionedSource, Source
from bytewax.outputs import Sink

from connectors.catalog import Catalog
from connectors.decode import Limits, ProbeDecoder, TransactionDecoder
from connectors.member_events import MemberEventDecoder
from connectors.privacy import DeviceHasher
from connectors.records import DeviceBinding, DeviceVisit, PartitionId, ProfileLatency, RawBatch, Sale, SiteBatch
from connectors.schemas import (
    DeadLetter,
    FootfallMinute,
    MemberErased,
    MemberProfile,
    MemberVisits,
    PeopleCount,
    SalesBucket,
    StoreHealth,
    StoreHour,
    StoreMembers,
    Visit,
    VisitsErased,
)
from flows.alert_notices import AlertNotice
from flows.footfall import footfall_builder
from flows.ingest import ingest, ingest_members
from flows.member_visits import resolve_devices, track_member_visits
from flows.outputs import EncodedSink, MetricsSink, encode_deadletter
from flows.profiles import update_profiles
from flows.redis_sinks import (
    RedisFootfallSink,
    RedisMemberVisitsSink,
    RedisPeopleSink,
    RedisProfileSink,
    RedisStoreHealthSink,
    RedisStoreMembersSink,
)
from flows.repurchase import keyed_by_store, store_repurchase
from flows.sales_watch import store_input, watch_sales
from flows.segments import assign_segments
from storepulse.errors import ConfigError
from storepulse.settings import Settings


@runtime_checkable
class DeclaresPartitions(Protocol):
    """A source that names the input partitions it reads apart from its bytewax parts
    (a test source that replays reads of several partitions from one iterable)."""

    def input_partitions(self) -> frozenset[PartitionId]: ...


def input_partitions(source: Source[RawBatch]) -> frozenset[PartitionId]:
    """The ``topic/partition`` ids a source reads: its own declaration, or its bytewax
    parts (Kafka and simulator sources name each part ``topic/partition``)."""
    if isinstance(source, DeclaresPartitions):
        return source.input_partitions()
    if isinstance(source, FixedPartitionedSource):
        try:
            return frozenset(PartitionId.parse(part) for part in source.list_parts())
        except ValueError as exc:
            raise ConfigError(f"{type(source).__name__} does not name its parts topic/partition: {exc}") from exc
    raise ConfigError(f"{type(source).__name__} does not say which input partitions it reads")


@dataclass
class Sources:
    """The inputs. Every new site's event clock waits until each partition of the probes
    and transactions has reported (``partitions``, derived from the sources themselves; see
    ``flows.clock``); member events feed profiles only, never a site's clock."""

    probes: Source[RawBatch]
    transactions: Source[RawBatch] | None = None
    members: Source[RawBatch] | None = None

    def partitions(self) -> frozenset[str]:
        ids = input_partitions(self.probes)
        if self.transactions is not None:
            ids |= input_partitions(self.transactions)
        return frozenset(map(str, ids))


@dataclass
class Sinks:
    """Named sinks; the name becomes the output step id ``write_<name>``."""

    deadletter: dict[str, Sink[DeadLetter]] = field(default_factory=dict)
    footfall: dict[str, Sink[Any]] = field(default_factory=dict)
    profiles: dict[str, Sink[MemberProfile | MemberErased]] = field(default_factory=dict)
    store_members: dict[str, Sink[StoreMembers]] = field(default_factory=dict)
    member_visits: dict[str, Sink[MemberVisits | VisitsErased]] = field(default_factory=dict)
    sales_watch: dict[str, Sink[SalesBucket | StoreHealth | AlertNotice]] = field(default_factory=dict)
    alerts: dict[str, Sink[AlertNotice]] = field(default_factory=dict)


def is_footfall(item: object) -> bool:
    """What the footfall sinks take: minutes, store-hours, visits and people counts (no
    device id)."""
    return isinstance(item, FootfallMinute | StoreHour | Visit | PeopleCount)


def is_device_visit(item: object) -> TypeGuard[DeviceVisit]:
    return isinstance(item, DeviceVisit)


def is_for_profile_sinks(item: object) -> bool:
    """Profiles, erasures and the latency marks that follow profiles (the profile sinks')."""
    return isinstance(item, MemberProfile | MemberErased | ProfileLatency)


def is_alert(item: object) -> TypeGuard[AlertNotice]:
    return isinstance(item, AlertNotice)


def binding_of(item: object) -> DeviceBinding | None:
    """The member step's device bindings (for ``resolve_devices``)."""
    return item if isinstance(item, DeviceBinding) else None


def erasure_of(item: object) -> tuple[str, int] | None:
    """``(member_id, E)`` of the member step's erasures (for ``track_member_visits``)."""
    return (item.member_id, item.ts) if isinstance(item, MemberErased) else None


def member_sales_of(item: tuple[str, SiteBatch]) -> list[tuple[str, Sale]]:
    """The sales and refunds of a site batch that name a member, keyed by the member."""
    return [(sale.member_id, sale) for sale in item[1].sales if sale.member_id is not None]


def limits_from(settings: Settings) -> Limits:
    return Limits(
        max_message_bytes=settings.max_message_bytes,
        deadletter_raw_bytes=settings.deadletter_raw_bytes,
        max_event_age_ms=int(settings.max_event_age_s * 1000),
        max_clock_skew_ms=int(settings.max_clock_skew_s * 1000),
    )


def kafka_sources(settings: Settings) -> Sources:
    from connectors.kafka import KafkaBatchSource

    config = settings.kafka_client_config()
    idle = settings.idle_partition_s
    group = settings.kafka_group_id  # offsets committed for monitoring only
    probes = KafkaBatchSource(config, settings.topic_probes, idle_after_s=idle, group_id=group)
    transactions = KafkaBatchSource(
        config, settings.topic_transactions, idle_after_s=idle, group_id=group, timestamps=True
    )
    members = KafkaBatchSource(config, settings.topic_members, idle_after_s=idle, group_id=group)
    return Sources(probes=probes, transactions=transactions, members=members)


def default_sinks(settings: Settings, catalog: Callable[[], Catalog] | None = None) -> Sinks:
    from connectors.kafka import KafkaConfirmedSink
    from flows.alert_outbox import alert_outbox

    if not settings.redis_url:
        raise ConfigError("STOREPULSE_REDIS_URL is not set: `run` serves footfall from Redis.")
    kafka = KafkaConfirmedSink(settings.kafka_client_config(), settings.topic_deadletter)
    return Sinks(
        deadletter={"deadletter_kafka": EncodedSink(kafka, encode_deadletter)},
        footfall={
            "footfall_redis": RedisFootfallSink(settings.redis_url),
            "people_redis": RedisPeopleSink(settings.redis_url),
            "footfall_metrics": MetricsSink(catalog),
        },
        profiles={"profiles_redis": RedisProfileSink(settings.redis_url)},
        store_members={"store_members_redis": RedisStoreMembersSink(settings.redis_url)},
        member_visits={"member_visits_redis": RedisMemberVisitsSink(settings.redis_url)},
        sales_watch={
            "sales_watch_metrics": MetricsSink(catalog),
            "store_health_redis": RedisStoreHealthSink(settings.redis_url),
        },
        alerts={"alerts_outbox": alert_outbox(settings)},
    )


def redis_catalog(settings: Settings) -> Callable[[], Catalog]:
    """A per-process catalog reader that connects on first use and re-checks Redis."""
    holder: dict[str, Any] = {}
    url = settings.redis_url
    if not url:
        raise ConfigError("STOREPULSE_REDIS_URL is not set: the engine reads its catalog from Redis.")

    def current() -> Catalog:
        watcher = holder.get("watcher")
        if watcher is None:
            from state.catalog import CatalogWatcher
            from state.redis import connect

            # Short timeouts: the watcher is on the hot path, and while Redis is down it keeps
            # serving the catalog it has, so a check must fail fast rather than stall a batch.
            watcher = holder["watcher"] = CatalogWatcher(
                lambda: connect(url, timeout_s=0.5, retries=0), settings.catalog_refresh_s
            )
        return watcher.current()

    return current


def build_flow(
    settings: Settings,
    *,
    sources: Sources | None = None,
    sinks: Sinks | None = None,
    catalog: Callable[[], Catalog] | None = None,
) -> Dataflow:
    hasher = DeviceHasher(settings.require_mac_hash_key())
    limits = limits_from(settings)
    catalog = catalog or redis_catalog(settings)
    sources = sources or kafka_sources(settings)
    sinks = sinks or default_sinks(settings, catalog)

    # A source (sensor, tills) stops holding its partition back when it is silent for the
    # idle timeout, or further behind its partition-mates than the clock skew we accept.
    hold_ms, idle_s = limits.max_clock_skew_ms, settings.idle_partition_s

    flow = Dataflow("storepulse")
    member_inputs: list[Stream[Any]] = []  # (member_id, Sale | MemberChange) streams
    probes = op.input("read_probes", flow, sources.probes)  # RawBatch
    ingested = ingest(
        "decode_probes", probes, ProbeDecoder(hasher, limits), catalog, hold_ms=hold_ms, idle_s=idle_s
    )
    site_batches, dead = ingested.batches, ingested.dead
    if sources.transactions is not None:
        txns = op.input("read_transactions", flow, sources.transactions)  # RawBatch
        sales = ingest(
            "decode_transactions", txns, TransactionDecoder(hasher, limits), catalog, hold_ms=hold_ms, idle_s=idle_s
        )
        site_batches = op.merge("merge_site_batches", site_batches, sales.batches)
        dead = op.merge("merge_decode_deadletters", dead, sales.dead)
        member_inputs.append(op.flat_map("route_member_sales", sales.batches, member_sales_of))  # (member_id, Sale)
    if sources.members is not None:
        raw_members = op.input("read_members", flow, sources.members)  # RawBatch
        changes = ingest_members("decode_members", raw_members, MemberEventDecoder(hasher, limits))
        member_inputs.append(changes.changes)  # (member_id, MemberChange)
        dead = op.merge("merge_member_deadletters", dead, changes.dead)
    # (site, SiteBatch)
    results = op.stateful_batch(
        "count_footfall",
        site_batches,
        footfall_builder(settings.allowed_lateness_ms, catalog, sources.partitions()),
    )
    results_flat = op.key_rm("unkey_footfall", results)
    # FootfallMinute | StoreHour | Visit, and the few others: DeadLetter (late) | DeviceVisit
    # (a visit of a device id: for member visits only, never for the footfall sinks)
    split = op.branch("split_footfall", results_flat, is_footfall)
    footfall = split.trues
    others = op.branch("split_late", split.falses, is_device_visit)
    device_visits = others.trues
    dead = op.merge("merge_deadletters", dead, others.falses)  # late records

    store_members: Stream[StoreMembers] | None = None
    if member_inputs:
        member_items = member_inputs[0]
        if len(member_inputs) > 1:
            member_items = op.merge("merge_member_inputs", *member_inputs)
        # An erased member's tombstone outlives the oldest event the decoders accept, so no
        # record from before the erasure can rebuild the member after it is dropped.
        tombstone_s = settings.max_event_age_s + 86_400
        # MemberProfile | MemberErased | ProfileLatency | what the steps after it need (flows.profiles)
        member_out = update_profiles(
            "update_profiles", member_items, tombstone_s=tombstone_s, loyalty=lambda m: catalog().loyalty(m)
        )
        for_redis = op.filter("route_profiles", member_out, is_for_profile_sinks)
        profiles = assign_segments("assign_segments", for_redis)  # every MemberProfile with its segment
        for name, profile_sink in sinks.profiles.items():
            op.output(f"write_{name}", profiles, profile_sink)
        store_items = op.filter_map("route_store_purchases", member_out, keyed_by_store)
        store_members = store_repurchase("count_repurchase", store_items)  # StoreMembers
        for name, members_sink in sinks.store_members.items():
            op.output(f"write_{name}", store_members, members_sink)
        bindings = op.filter_map("route_device_bindings", member_out, binding_of)  # DeviceBinding
        erasures = op.filter_map("route_visit_erasures", member_out, erasure_of)  # (member_id, E)
        # (member_id, MemberVisit): visits of devices bound to a member
        credited = resolve_devices("resolve_devices", bindings, device_visits, retain_s=tombstone_s)
        visits = track_member_visits("track_member_visits", credited, erasures, tombstone_s=tombstone_s)
        for name, visits_sink in sinks.member_visits.items():
            op.output(f"write_{name}", visits, visits_sink)
    if sources.transactions is not None:  # no sales, nothing to watch
        watched = op.filter_map("route_store_minutes", footfall, store_input)  # (store_id, FootfallMinute)
        if store_members is not None:
            members_by_store = op.filter_map("route_store_members", store_members, store_input)
            watched = op.merge("merge_watched", watched, members_by_store)
        watch = watch_sales("watch_sales", watched, catalog)  # SalesBucket | StoreHealth | AlertNotice
        for name, watch_sink in sinks.sales_watch.items():
            op.output(f"write_{name}", watch, watch_sink)
        notices = op.filter("route_alerts", watch, is_alert)
        for name, alert_sink in sinks.alerts.items():
            op.output(f"write_{name}", notices, alert_sink)
    for name, dead_sink in sinks.deadletter.items():
        op.output(f"write_{name}", dead, dead_sink)
    for name, sink in sinks.footfall.items():
        op.output(f"write_{name}", footfall, sink)
    return flow


def __getattr__(name: str) -> Dataflow:
    """``flows.engine:flow``: the default engine, built from the environment on access."""
    if name == "flow":
        return build_flow(Settings.from_env())
    raise AttributeError(name)
