"""Ingest: routing one partition read to sites, with its clocks (literal reads, exact values)."""

from __future__ import annotations

import json
import logging

import pytest
from prometheus_client import REGISTRY

from connectors.catalog import Catalog
from connectors.decode import Limits, ProbeDecoder
from connectors.privacy import DeviceHasher
from connectors.records import RawBatch, RawMessage, SiteBatch
from flows.clock import PartitionClock
from flows.ingest import PartitionState, route

CATALOG = Catalog.from_yaml(
    "{malls: [{mall_id: M1, name: J, tz: UTC, lat: 0, lon: 0}, {mall_id: M2, name: K, tz: UTC, lat: 0, lon: 0}], "
    "sensors: [{sensor_id: AP-1, mall_id: M1, zone: a, lat: 0, lon: 0}, "
    "{sensor_id: AP-2, mall_id: M1, zone: b, lat: 0, lon: 0}]}"
)
NOW_S = 1_763_870_400.0
DECODER = ProbeDecoder(DeviceHasher(b"0123456789abcdef"), Limits(clock=lambda: NOW_S))


def batches(out: list) -> list[tuple[str, SiteBatch]]:
    """The routed site batches (no dead letters expected here)."""
    assert all(isinstance(item, tuple) for item in out)
    return out


def read(offset: int, *sightings: tuple[str, int]) -> RawBatch:
    """One read of wifi.probes/0: (sensor, ts) sightings of one phone."""
    values = [json.dumps({"sensor_id": s, "ts": ts, "mac": "a4:5e:60:1b:22:9c", "rssi": -60}).encode()
              for s, ts in sightings]
    return RawBatch(topic="wifi.probes", partition=0,
                    messages=[RawMessage(offset + i, b"k", v) for i, v in enumerate(values)])


def test_every_site_hears_the_partition_and_an_idle_read_goes_to_all() -> None:
    # The partition carries only M1's records; M2 hears its progress all the same (so a
    # backlog holds M2 back too), and both hear it go idle.
    state = PartitionState(PartitionClock(300_000, 10.0))
    now_ms = int(NOW_S * 1000)
    out = route(state, read(0, ("AP-1", now_ms - 5000)), DECODER, CATALOG, NOW_S)
    assert [(site, b.progress_ts, b.idle, len(b.sightings)) for site, b in batches(out)] == [
        ("M1", now_ms - 5000, False, 1),
        ("M2", now_ms - 5000, False, 0),
    ]
    # the same second again: only the site with records hears it
    out = route(state, read(1, ("AP-1", now_ms - 4900)), DECODER, CATALOG, NOW_S)
    assert [site for site, _ in batches(out)] == ["M1"]
    idle = RawBatch(topic="wifi.probes", partition=0, messages=[], idle=True)
    assert [(site, b.progress_ts, b.idle) for site, b in batches(route(state, idle, DECODER, CATALOG, NOW_S))] == [
        ("M1", now_ms - 4900, True),
        ("M2", now_ms - 4900, True),
    ]


def test_a_clock_running_fast_is_a_gauge_and_named_once_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    # AP-2 stamps 120 s ahead of the wall clock, AP-1 2 s behind (delivery). Three reads in a
    # row ahead name AP-2 once; AP-1 never; progress follows AP-1, the slower clock.
    state = PartitionState(PartitionClock(300_000, 10.0))
    now_ms = int(NOW_S * 1000)
    caplog.set_level(logging.INFO, logger="flows.ingest")
    progress = []
    for i in range(5):
        out = route(state, read(2 * i, ("AP-1", now_ms - 2000), ("AP-2", now_ms + 120_000)), DECODER, CATALOG, NOW_S)
        progress.append(next(b.progress_ts for site, b in batches(out) if site == "M1"))
    assert progress == [now_ms - 2000] * 5

    def gauge(source: str) -> float | None:
        labels = {"topic": "wifi.probes", "source": source}
        return REGISTRY.get_sample_value("storepulse_source_clock_offset_seconds", labels)

    assert (gauge("AP-1"), gauge("AP-2")) == (-2.0, 120.0)
    named = [r.getMessage() for r in caplog.records if "the clock of" in r.getMessage()]
    assert named == ["wifi.probes/0: the clock of AP-2 is +120 s ahead of this engine's; its records are placed "
                     "by its own clock, up to STOREPULSE_MAX_CLOCK_SKEW_S ahead (check its NTP)"]


def test_a_site_added_to_the_catalog_hears_every_partition_at_its_next_read() -> None:
    # M3 appears in the catalog between two reads of the same second: it hears the progress
    # at once (its clock starts), not only when this partition carries a record for it.
    state = PartitionState(PartitionClock(300_000, 10.0))
    now_ms = int(NOW_S * 1000)
    route(state, read(0, ("AP-1", now_ms - 5000)), DECODER, CATALOG, NOW_S)
    grown = Catalog.from_yaml(
        CATALOG.to_yaml().replace("malls:\n", "malls:\n- {mall_id: M3, name: L, tz: UTC, lat: 0, lon: 0}\n", 1)
    )
    assert grown.mall("M3") is not None
    out = route(state, read(1, ("AP-1", now_ms - 4900)), DECODER, grown, NOW_S)
    assert [(site, b.progress_ts) for site, b in batches(out)] == [
        ("M1", now_ms - 4900),
        ("M2", now_ms - 4900),
        ("M3", now_ms - 4900),
    ]


def test_a_snapshot_from_before_source_clocks_resumes_with_its_progress() -> None:
    # What the foundation's decode steps snapshotted: sites fed, sites greeted, progress.
    old = {"sites": {"M1"}, "greeted": {"M1", "M2"}, "catalog_version": "abc", "progress_ts": 1_000_000}
    state = PartitionState.__new__(PartitionState)
    state.__setstate__(old)
    assert (state.sites, state.clock.progress_ts, state.announced_s, state.far_reads) == ({"M1"}, 1_000_000, None, {})
    assert not hasattr(state, "greeted")
    # progress never goes back behind what the old snapshot had reached
    assert state.clock.advance({"AP-1": 900_000}, now=0.0) == 1_000_000
