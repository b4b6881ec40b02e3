"""Decoding and validation: every rejection reason, literal bytes in, exact verdicts out."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from connectors.catalog import Catalog
from connectors.decode import Limits, ProbeDecoder, TransactionDecoder
from connectors.privacy import DeviceHasher
from connectors.records import RawBatch, RawMessage

CATALOG = Catalog.from_yaml("""
malls: [{mall_id: M1, name: Joy, tz: Asia/Shanghai, lat: 0, lon: 0}]
stores:
  - {store_id: S1, merchant_id: X, mall_id: M1, name: A, category: coffee, tz: Asia/Shanghai, lat: 0, lon: 0}
  - {store_id: S9, merchant_id: X, name: Street, category: tea, tz: Asia/Shanghai, lat: 0, lon: 0}
  - {store_id: S8, merchant_id: Y, name: Kowloon, category: tea, tz: Asia/Hong_Kong, lat: 0, lon: 0, currency: HKD}
sensors:
  - {sensor_id: AP-1, mall_id: M1, store_id: S1, zone: S1-floor, lat: 0, lon: 0}
""")
NOW_MS = 1_763_870_400_000
KEY = b"secret"
MAC = "a4:5e:60:1b:22:9c"


def limits(**kw: int) -> Limits:
    return Limits(clock=lambda: NOW_MS / 1000, **kw)


def decode_probes(*values: bytes, **kw: int):
    batch = RawBatch(
        topic="wifi.probes", partition=3, messages=[RawMessage(10 + i, None, v) for i, v in enumerate(values)]
    )
    return ProbeDecoder(DeviceHasher(KEY), limits(**kw)).decode(batch, CATALOG)


def decode_txns(*values: bytes):
    batch = RawBatch(
        topic="pos.transactions", partition=0, messages=[RawMessage(i, None, v) for i, v in enumerate(values)]
    )
    return TransactionDecoder(DeviceHasher(KEY), limits()).decode(batch, CATALOG)


def probe(**fields: object) -> bytes:
    return json.dumps({"sensor_id": "AP-1", "ts": NOW_MS, "mac": MAC, "rssi": -60, **fields}).encode()


def txn(**fields: object) -> bytes:
    base = {
        "type": "sale",
        "txn_id": "T1",
        "ts": NOW_MS,
        "merchant_id": "X",
        "store_id": "S1",
        "amount": 1200,
        "currency": "CNY",
        "payment": "alipay",
        "items": [{"sku": "K", "category": "coffee", "qty": 2, "unit_price": 600}],
    }
    return json.dumps({**base, **fields}).encode()


def test_a_good_sighting_is_pseudonymised() -> None:
    good, bad = decode_probes(probe(seq=7, ie=[0, 1], vendor_ie=[6130]))
    assert bad == []
    [(site, s)] = good
    expected_device = int.from_bytes(hmac.new(KEY, MAC.encode(), hashlib.sha256).digest()[:8], "big")
    assert (site, s.sensor_id, s.store_id, s.zone, s.device, s.randomized, s.rssi, s.seq, s.offset) == (
        "M1",
        "AP-1",
        "S1",
        "S1-floor",
        expected_device,
        False,
        -60,
        (7 + int.from_bytes(hmac.new(KEY, b"seq@%d" % (NOW_MS // 86_400_000), hashlib.sha256).digest()[:2], "big"))
        % 4096,
        10,
    )
    # neither the raw sequence number nor the element list leaves the first step: a keyed
    # offset of the day (differences kept) and a keyed hash of the elements
    assert s.seq != 7
    elements = int.from_bytes(hmac.new(KEY, b"ie@0,1|6130", hashlib.sha256).digest()[:8], "big") >> 1
    assert s.fingerprint == elements


def test_a_dead_letter_keeps_no_sequence_number_or_element_list() -> None:
    # rejected for its rssi; its raw bytes go to the dead-letter topic without the MAC,
    # the sequence number or the element ids and OUIs
    good, [dead] = decode_probes(probe(rssi=12, seq=2187, ie=[0, 1, 50, 221], vendor_ie=[6130, 20722]))
    assert good == [] and dead.reason == "bad_value"
    for raw in ("2187", "221", "6130", "20722", MAC):
        assert raw not in dead.raw, raw
    assert json.loads(dead.raw)["seq"] is None and json.loads(dead.raw)["ie"] is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b'{"sensor_id": "AP-1", "ts": ', "bad_json"),
        (b"\xff\xfe not utf-8", "bad_json"),
        (probe(rssi="loud"), "bad_schema"),
        (json.dumps({"sensor_id": "AP-1", "mac": MAC, "rssi": -60}).encode(), "bad_schema"),
        (probe(sensor_id="AP-404"), "unknown_sensor"),
        (probe(mac="not-a-mac"), "bad_value"),
        (probe(rssi=12), "bad_value"),
        (probe(ts=NOW_MS + 30 * 86_400_000), "ts_future"),
        (probe(ts=NOW_MS - 400 * 86_400_000), "ts_past"),
        (probe(pad="x" * 2000), "oversized"),
    ],
)
def test_each_bad_probe_gets_its_reason(value: bytes, reason: str) -> None:
    good, bad = decode_probes(value, max_message_bytes=1000)
    assert good == []
    assert [(d.topic, d.partition, d.offset, d.reason) for d in bad] == [("wifi.probes", 3, 10, reason)]
    assert MAC not in bad[0].raw


def test_a_batched_report_rejects_only_its_bad_observations() -> None:
    report = {
        "sensor_id": "AP-1",
        "observations": [
            {"mac": MAC, "rssi": -60, "ts": NOW_MS},
            {"mac": "zz:zz", "rssi": -60, "ts": NOW_MS},
            {"mac": "A6-11-22-33-44-55", "rssi": -70, "ts": NOW_MS + 1},
        ],
    }
    good, bad = decode_probes(json.dumps(report).encode())
    assert [(s.ts, s.randomized) for _, s in good] == [(NOW_MS, False), (NOW_MS + 1, True)]
    assert [(d.offset, d.reason) for d in bad] == [(10, "bad_value")]
    # read = accepted + dead-lettered: three observations, two accepted, one rejected
    assert len(good) + len(bad) == 3


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"[1, 2", "bad_json"),
        (txn(amount="12"), "bad_schema"),
        (txn(payment="seashells"), "bad_schema"),
        (txn(amount=-5), "bad_value"),
        (txn(items=[{"sku": "K", "category": "c", "qty": 0, "unit_price": 1}]), "bad_value"),
        (txn(store_id="S404"), "unknown_store"),
        (txn(currency="USD"), "wrong_currency"),
        (txn(ts=NOW_MS + 30 * 86_400_000), "ts_future"),
        (txn(ts=NOW_MS - 400 * 86_400_000), "ts_past"),
    ],
)
def test_each_bad_transaction_gets_its_reason(value: bytes, reason: str) -> None:
    good, bad = decode_txns(value)
    assert good == [] and [d.reason for d in bad] == [reason]


def test_a_transaction_is_accepted_only_in_its_stores_currency() -> None:
    # S1 takes CNY (the default), S8 takes HKD (stated in the catalog)
    good, bad = decode_txns(
        txn(store_id="S8", currency="HKD"),
        txn(txn_id="T2", store_id="S8", currency="CNY"),
        txn(txn_id="T3", store_id="S1", currency="HKD"),
        txn(txn_id="T4", store_id="S1", currency="cny"),
    )
    assert [(site, s.txn_id, s.amount) for site, s in good] == [("S8", "T1", 1200)]
    assert [(d.offset, d.reason, d.detail) for d in bad] == [
        (1, "wrong_currency", "currency 'CNY', but store S8 takes HKD (catalog)"),
        (2, "wrong_currency", "currency 'HKD', but store S1 takes CNY (catalog)"),
        (3, "wrong_currency", "currency 'cny', but store S1 takes CNY (catalog)"),
    ]


def test_a_street_store_is_its_own_site_and_refunds_are_flagged() -> None:
    good, bad = decode_txns(txn(store_id="S9"), txn(txn_id="T2", type="refund", ref_txn_id="T1"))
    assert bad == []
    assert [(site, s.store_id, s.refund) for site, s in good] == [("S9", "S9", False), ("M1", "S1", True)]


def test_dead_letter_raw_is_bounded_and_redacted() -> None:
    value = probe(sensor_id="AP-404", note="call 13812345678", pad="y" * 500)
    _, [dead] = decode_probes(value, deadletter_raw_bytes=200)
    assert dead.raw_truncated and len(dead.raw) <= 200
    assert "13812345678" not in dead.raw and MAC not in dead.raw and "mac#" in dead.raw


def test_one_mistyped_observation_does_not_take_the_good_ones_with_it() -> None:
    report = (
        b'{"sensor_id": "AP-1", "observations": ['
        b'{"mac": "a4:5e:60:1b:22:9c", "rssi": -60, "ts": %d}, '
        b'{"mac": "a4:5e:60:1b:22:9d", "rssi": "loud", "ts": %d}, '
        b'{"mac": "a4:5e:60:1b:22:9e", "rssi": -61, "ts": %d}]}'
    ) % (NOW_MS, NOW_MS, NOW_MS)
    good, bad = decode_probes(report)
    assert [s.rssi for _, s in good] == [-60, -61]
    assert [(d.offset, d.reason) for d in bad] == [(10, "bad_schema")]
    assert '"loud"' in bad[0].raw and "a4:5e:60:1b:22:9d" not in bad[0].raw


def test_no_mac_in_a_dead_letter_whether_quoted_by_the_parser_or_json_escaped() -> None:
    # A MAC sent as the payment method: msgspec's error quotes the refused value.
    _, [dead] = decode_txns(txn(payment=MAC))
    assert dead.reason == "bad_schema" and MAC not in dead.detail and "mac#" in dead.detail
    # A MAC with its characters written as JSON escapes, on the probe topic.
    escaped = "".join(f"\\u{ord(c):04x}" for c in MAC)
    value = b'{"sensor_id": "AP-404", "ts": %d, "mac": "%s", "rssi": -60}' % (NOW_MS, escaped.encode())
    _, [dead] = decode_probes(value)
    assert dead.reason == "unknown_sensor" and escaped not in dead.raw and "mac#" in dead.raw
