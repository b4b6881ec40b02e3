"""One harness: run literal partition reads through the real engine dataflow.

``ScriptedReads`` replays ``RawBatch`` reads of several partitions from one iterable, in
the order given (so a test decides which partition is read ahead of which), and names
the partitions it stands for: those its reads name, plus any ``also`` (a partition that
never carries data). ``run_reads`` builds the engine with ``flows.engine.build_flow``,
runs it to the end of input in this process and returns (outputs, dead letters). Put
``ScriptedReads.ABORT()`` in the reads to stop the dataflow there without flushing, to
see what it had written by then.

>>> import json
>>> from connectors.catalog import Catalog
>>> from connectors.records import RawBatch, RawMessage
>>> from connectors.schemas import FootfallMinute, PeopleCount
>>> from storepulse.settings import Settings
>>> catalog = Catalog.from_yaml('''
... malls: [{mall_id: M1, name: Joy, tz: UTC, lat: 0, lon: 0}]
... sensors: [{sensor_id: C-1, mall_id: M1, zone: hall, lat: 0, lon: 0}]''')
>>> value = json.dumps({"sensor_id": "C-1", "ts": 1_763_870_400_000,
...                     "mac": "a4:5e:60:1b:22:9c", "rssi": -60}).encode()
>>> read = RawBatch(topic="wifi.probes", partition=0, messages=[RawMessage(0, b"C-1", value)])
>>> settings = Settings(mac_hash_key=b"0123456789abcdef", max_event_age_s=1e10)
>>> out, dead = run_reads(settings, catalog, [read])
>>> [(m.scope, m.scope_id, (m.minute_ts - 1_763_870_400_000) // 60_000, m.devices)
...  for m in out if isinstance(m, FootfallMinute)], dead
([('mall', 'M1', -2, 0), ('zone', 'hall', -2, 0), ('mall', 'M1', 0, 1), ('zone', 'hall', 0, 1)], [])
>>> [(p.sensor_id, p.window_ts - 1_763_870_400_000, p.macs) for m in out if isinstance(p := m, PeopleCount)]
[('C-1', 0, 1)]

(The read moves event time to its minute T; with 60 s of lateness, minutes before T - 1
close, and the newest closed one, T - 2, is written for every scope with nothing heard.
The end of input closes minute T, and the sensor's 5-minute window of people.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from bytewax.recovery import RecoveryConfig
from bytewax.testing import TestingSink, TestingSource, run_main

from connectors.catalog import Catalog
from connectors.records import PartitionId, RawBatch
from flows.engine import Sinks, Sources, build_flow
from storepulse.settings import Settings


class ScriptedReads(TestingSource):
    """Partition reads replayed in order from one iterable (``TestingSource`` markers allowed)."""

    __test__ = False

    def __init__(self, reads: Iterable[Any], *, also: Iterable[PartitionId] = ()) -> None:
        reads = list(reads)
        super().__init__(reads)
        self._partitions = frozenset(
            PartitionId(r.topic, r.partition) for r in reads if isinstance(r, RawBatch)
        ) | frozenset(also)

    def input_partitions(self) -> frozenset[PartitionId]:
        return self._partitions


def run_reads(
    settings: Settings,
    catalog: Catalog | Callable[[], Catalog],
    probes: Iterable[Any],
    transactions: Iterable[Any] | None = None,
    *,
    also: Iterable[PartitionId] = (),
    recovery: RecoveryConfig | None = None,
    watched: list[Any] | None = None,
) -> tuple[list[Any], list[Any]]:
    """Run the engine over literal reads of ``wifi.probes`` (and ``pos.transactions``);
    ``also`` names input partitions no read comes from. Returns (outputs, dead letters);
    the sales watch's records (``flows.sales_watch``) go to ``watched`` if given."""
    out: list[Any] = []
    dead: list[Any] = []
    extra = list(also)
    probe_source = ScriptedReads(probes, also=[p for p in extra if p.topic == "wifi.probes"])
    txn_source = None
    if transactions is not None:
        txn_source = ScriptedReads(transactions, also=[p for p in extra if p.topic != "wifi.probes"])
    flow = build_flow(
        settings,
        sources=Sources(probes=probe_source, transactions=txn_source),
        sinks=Sinks(
            deadletter={"dead": TestingSink(dead)},
            footfall={"out": TestingSink(out)},
            sales_watch={} if watched is None else {"watched": TestingSink(watched)},
        ),
        catalog=catalog if callable(catalog) else (lambda: catalog),
    )
    run_main(flow, epoch_interval=None if recovery is None else timedelta(0), recovery_config=recovery)
    return out, dead
