"""SimulatorSource: keyed partitions like Kafka's, exact resume, paced release."""

from __future__ import annotations

import time
import zlib
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, run_main

from connectors.records import RawBatch
from simulators.mall import MallSimulator, SimEvent
from simulators.scenario import Scenario
from simulators.source import SimulatorSource
from storepulse.errors import ConfigError

PARTITIONS = {"wifi.probes": 3, "pos.transactions": 2, "members.events": 2}
NAMES = {"wifi.probes": "probes-in", "pos.transactions": "pos-in", "members.events": "members-in"}


@pytest.fixture(scope="module")
def events() -> list[SimEvent]:
    scenario = Scenario.load("demo").replace(start_date="2025-03-14", stores_per_mall=4,
                                             shoppers_per_mall_per_day=150, probe_interval_s=60.0)
    return list(MallSimulator(scenario, seed=9).events())


def drain(part, limit_s: float = 10.0) -> list:
    """Every batch a part emits until it ends (bounded in time)."""
    out, deadline = [], time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            out += part.next_batch()
        except StopIteration:
            return out
    raise AssertionError("part did not end in time")


def test_parts_hold_each_key_in_its_crc32_partition_in_order(events) -> None:
    src = SimulatorSource(events, partitions=PARTITIONS, topics=NAMES, batch_size=500)
    assert src.list_parts() == ["probes-in/0", "probes-in/1", "probes-in/2", "pos-in/0",
                                "pos-in/1", "members-in/0", "members-in/1"]
    # the expectation, by a plain loop: Kafka's keyed partitioning of the stream
    expected = defaultdict(list)
    for e in events:
        expected[f"{NAMES[e.topic]}/{zlib.crc32(e.key) % PARTITIONS[e.topic]}"].append(
            (e.key, e.value))
    for name in src.list_parts():
        batches = drain(src.build_part("in", name, None))
        topic, _, partition = name.rpartition("/")
        assert all(b.topic == topic and b.partition == int(partition) for b in batches)
        # the end is said as one idle batch, so a finished partition holds no site back
        assert batches[-1].idle and batches[-1].messages == []
        assert all(0 < len(b.messages) <= 500 and not b.idle for b in batches[:-1])
        messages = [m for b in batches for m in b.messages]
        assert [m.offset for m in messages] == list(range(len(messages)))
        assert [(m.key, m.value) for m in messages] == expected[name]
    assert sum(len(v) for v in expected.values()) == len(events)


def test_resume_goes_on_exactly_from_the_snapshot(events) -> None:
    src = SimulatorSource(events, partitions=PARTITIONS, batch_size=100)
    whole = [m for b in drain(src.build_part("in", "wifi.probes/1", None)) for m in b.messages]
    part = src.build_part("in", "wifi.probes/1", None)
    head = [m for _ in range(3) for b in part.next_batch() for m in b.messages]
    state = part.snapshot()
    assert state == 300 == head[-1].offset + 1
    again = SimulatorSource(events, partitions=PARTITIONS, batch_size=77)
    tail = [m for b in drain(again.build_part("in", "wifi.probes/1", state)) for m in b.messages]
    assert head + tail == whole
    done = again.build_part("in", "wifi.probes/1", len(whole))
    assert [(b.idle, b.messages) for b in done.next_batch()] == [(True, [])]
    with pytest.raises(StopIteration):
        done.next_batch()


def test_in_a_dataflow_with_recovery_a_crash_loses_nothing(events, tmp_path) -> None:
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    parts = {"wifi.probes": 2, "pos.transactions": 1, "members.events": 1}

    def flow(out: list, crash_after: int | None) -> Dataflow:
        seen = [0]

        def explode(batch):
            seen[0] += 1
            if crash_after is not None and seen[0] > crash_after:
                raise RuntimeError("simulated crash")
            return [(batch.source, m.offset) for m in batch.messages]

        df = Dataflow("sim_source_recovery")
        batches = op.input("read", df, SimulatorSource(events, partitions=parts, batch_size=50))
        op.output("out", op.flat_map("offsets", batches, explode), TestingSink(out))
        return df

    first: list = []
    with pytest.raises(RuntimeError):  # bytewax wraps the step's error
        run_main(flow(first, crash_after=40), epoch_interval=timedelta(0),
                 recovery_config=recovery)
    second: list = []
    run_main(flow(second, crash_after=None), epoch_interval=timedelta(0),
             recovery_config=recovery)
    total = {f"{t}/{p}": 0 for t, n in parts.items() for p in range(n)}
    for e in events:
        total[f"{e.topic}/{zlib.crc32(e.key) % parts[e.topic]}"] += 1
    got = defaultdict(set)
    for source, offset in first + second:
        got[source].add(offset)
    assert {s: len(o) for s, o in got.items()} == {s: n for s, n in total.items() if n}
    assert all(o == set(range(len(o))) for o in got.values())
    assert len(second) < sum(total.values())  # the second run resumed, it did not start over


def test_speedup_releases_events_when_simulated_time_reaches_them() -> None:
    t0 = 1_741_910_400_000
    evs = [SimEvent("pos.transactions", b"S1", b"{}", t0 + 100 * i) for i in range(21)]  # 2 s
    src = SimulatorSource(evs, partitions={"pos.transactions": 1}, speedup=4.0, idle_s=0.0)
    part = src.build_part("in", "pos.transactions/0", None)
    released, calls, started = [], 0, time.monotonic()
    deadline = started + 5.0
    while time.monotonic() < deadline:
        awake = part.next_awake()
        if awake is not None and awake > datetime.now(UTC):
            time.sleep(max(0.0, (awake - datetime.now(UTC)).total_seconds()))
        calls += 1
        try:
            batches = part.next_batch()
        except StopIteration:
            break
        elapsed = time.monotonic() - started
        for b in batches:
            for m in b.messages:
                released.append((elapsed, evs[m.offset].ts - t0))
    assert [o for o in range(21)] == list(range(len(released)))
    # never early: simulated time (4 x wall) had reached each message (10 ms slack)
    assert all(sim_ms <= 4000 * elapsed + 10 for elapsed, sim_ms in released)
    assert 0.45 < released[-1][0] < 1.5  # 2 s of simulated time at 4x is 0.5 s
    assert calls < 60  # it slept until the next message was due instead of spinning


def test_idle_partition_says_so_after_idle_s() -> None:
    t0 = 1_741_910_400_000
    evs = [SimEvent("members.events", b"U1", b"{}", t0),
           SimEvent("members.events", b"U1", b"{}", t0 + 3_600_000)]  # an hour later
    src = SimulatorSource(evs, partitions={"members.events": 1}, speedup=10.0, idle_s=0.2)
    part = src.build_part("in", "members.events/0", None)
    assert [m.offset for b in part.next_batch() for m in b.messages] == [0]
    awake = part.next_awake()  # not in 6 minutes (an hour at 10x): in idle_s, to say so
    assert awake is not None and awake <= datetime.now(UTC) + timedelta(seconds=0.25)
    idle: list[RawBatch] = []
    deadline = time.monotonic() + 3.0
    while not idle and time.monotonic() < deadline:
        awake = part.next_awake()
        assert awake is not None  # the partition is idle, so it names when to say so
        wait = (awake - datetime.now(UTC)).total_seconds()
        time.sleep(max(0.0, wait))
        idle = [b for b in part.next_batch() if b.idle]
    assert idle and idle[0].messages == [] and part.snapshot() == 1


def test_bad_arguments_fail_clearly(events) -> None:
    with pytest.raises(ConfigError, match="at least one"):
        SimulatorSource(events, partitions={"wifi.probes": 0})
    with pytest.raises(ConfigError, match="speedup must be positive"):
        SimulatorSource(events, partitions=PARTITIONS, speedup=0)
    src = SimulatorSource(events, partitions={"wifi.probes": 1})
    with pytest.raises(ConfigError, match="no partition count"):
        src.build_part("in", "wifi.probes/0", None)
