"""Hostile input: no message stops a decoder, and read = accepted + rejected.

Table tests with literal bytes: deeply nested messages (200 KB, far under the size limit)
are dead-lettered as ``too_deep`` before they are parsed while the good messages of the
same batch are accepted; an exception raised anywhere while decoding one record
dead-letters that record as ``malformed``. The generated payloads are in
``test_decode_properties.py``.
"""

from __future__ import annotations

import json
import logging

import pytest

from connectors.catalog import Catalog
from connectors.decode import Limits, ProbeDecoder, TransactionDecoder
from connectors.privacy import DeviceHasher
from connectors.records import RawBatch, RawMessage
from connectors.schemas import Transaction

CATALOG = Catalog.from_yaml("""
malls: [{mall_id: M1, name: Joy, tz: Asia/Shanghai, lat: 0, lon: 0}]
stores:
  - {store_id: S1, merchant_id: X, mall_id: M1, name: A, category: coffee, tz: Asia/Shanghai, lat: 0, lon: 0}
sensors:
  - {sensor_id: AP-1, mall_id: M1, store_id: S1, zone: S1-floor, lat: 0, lon: 0}
""")
NOW_MS = 1_763_870_400_000
MAC = "a4:5e:60:1b:22:9c"
LIMIT = Limits().max_nesting_depth  # 32
HALF = 100_000  # openers in a 200 KB message: 100 000 "[" then 100 000 "]"


def decode(topic: str, values: list[bytes], decoder_cls: type | None = None, hasher: DeviceHasher | None = None):
    cls = decoder_cls or (ProbeDecoder if topic == "wifi.probes" else TransactionDecoder)
    batch = RawBatch(topic=topic, partition=1, messages=[RawMessage(i, None, v) for i, v in enumerate(values)])
    return cls(hasher or DeviceHasher(b"secret"), Limits(clock=lambda: NOW_MS / 1000)).decode(batch, CATALOG)


def probe(**fields: object) -> bytes:
    return json.dumps({"sensor_id": "AP-1", "ts": NOW_MS, "mac": MAC, "rssi": -60, **fields}).encode()


def txn(**fields: object) -> bytes:
    base = {"type": "sale", "txn_id": "T1", "ts": NOW_MS, "merchant_id": "X", "store_id": "S1",
            "amount": 1200, "currency": "CNY", "payment": "alipay"}
    return json.dumps({**base, **fields}).encode()


def with_field(message: bytes, raw_json: bytes) -> bytes:
    """``message`` (a JSON object) with one more field, ``"extra": <raw_json>``."""
    return message[:-1] + b', "extra": ' + raw_json + b"}"


def arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def staircase(depth: int) -> bytes:
    """Nests ``depth`` levels with no two ``[`` in a row: ``[0,[0,[0, ... [0]]]]``."""
    return b"[0," * (depth - 1) + b"[0]" + b"]" * (depth - 1)


def batched(*observations: bytes) -> bytes:
    return b'{"sensor_id": "AP-1", "observations": [' + b", ".join(observations) + b"]}"


GOOD_OBS = json.dumps({"mac": MAC, "rssi": -60, "ts": NOW_MS}).encode()

# (name, topic, hostile message, reason); each row's batch is [good, hostile, good].
DEEP = [
    ("bare arrays, 200 KB", "wifi.probes", arrays(HALF), "too_deep"),
    ("bare objects", "wifi.probes", objects(HALF // 3), "too_deep"),
    ("no long run of brackets", "wifi.probes", staircase(HALF // 2), "too_deep"),
    ("in a field of a valid probe", "wifi.probes", with_field(probe(), arrays(HALF)), "too_deep"),
    ("in one observation of a batch", "wifi.probes", batched(GOOD_OBS, arrays(HALF)), "too_deep"),
    ("one level over the limit", "wifi.probes", with_field(probe(), arrays(LIMIT)), "too_deep"),
    ("bare arrays, 200 KB", "pos.transactions", arrays(HALF), "too_deep"),
    ("bare objects", "pos.transactions", objects(HALF // 3), "too_deep"),
    ("no long run of brackets", "pos.transactions", staircase(HALF // 2), "too_deep"),
    ("in a field of a valid sale", "pos.transactions", with_field(txn(), arrays(HALF)), "too_deep"),
    ("in the items of a sale", "pos.transactions", txn()[:-1] + b', "items": ' + arrays(HALF) + b"}", "too_deep"),
    ("one level over the limit", "pos.transactions", with_field(txn(), arrays(LIMIT)), "too_deep"),
]


@pytest.mark.parametrize(
    ("topic", "hostile", "reason"), [row[1:] for row in DEEP], ids=[f"{r[1]}: {r[0]}" for r in DEEP]
)
def test_a_deeply_nested_message_is_dead_lettered_and_its_batch_goes_on(
    topic: str, hostile: bytes, reason: str
) -> None:
    assert len(hostile) < Limits().max_message_bytes  # under the size limit: only depth stops it
    good_value = probe() if topic == "wifi.probes" else txn()
    good, bad = decode(topic, [good_value, hostile, good_value])
    assert [r.offset for _, r in good] == [0, 2]
    assert [(d.offset, d.reason) for d in bad] == [(1, reason)]
    assert "levels deep, over the limit of 32" in bad[0].detail  # the guard, not the parser, said so


@pytest.mark.parametrize("topic", ["wifi.probes", "pos.transactions"])
def test_nesting_at_the_limit_and_brackets_inside_strings_are_not_too_deep(topic: str) -> None:
    make = probe if topic == "wifi.probes" else txn
    # the message's own object is level 1, so an extra field may nest 31 levels
    at_limit = with_field(make(), arrays(LIMIT - 1))
    in_string = make(note="[" * HALF + "\\\"{" * 1000)
    good, bad = decode(topic, [at_limit, in_string])
    assert bad == [] and [r.offset for _, r in good] == [0, 1]


class ExplodingHasher(DeviceHasher):
    """A hasher with a bug that only one MAC triggers."""

    def device_normalized(self, mac: str, ts_ms: int) -> int:
        if mac.endswith(":ee"):
            raise ArithmeticError(f"cannot hash {mac}")
        return super().device_normalized(mac, ts_ms)


class ExplodingTransactionDecoder(TransactionDecoder):
    """A decoder with a bug that only one txn_id triggers."""

    def _check(self, txn: Transaction, catalog: Catalog, now_ms: int) -> str:
        if txn.txn_id == "BOOM":
            raise KeyError(txn.txn_id)
        return super()._check(txn, catalog, now_ms)


def test_an_error_inside_one_observation_dead_letters_that_observation_only(caplog) -> None:
    bomb = MAC[:-2] + "ee"
    values = [
        probe(),
        probe(mac=bomb),
        batched(GOOD_OBS, json.dumps({"mac": bomb, "rssi": -70, "ts": NOW_MS}).encode(), GOOD_OBS),
        probe(),
    ]
    with caplog.at_level(logging.WARNING, logger="connectors.decode"):
        good, bad = decode("wifi.probes", values, hasher=ExplodingHasher(b"secret"))
    # read: 1 + 1 + 3 observations + 1 = 6 = 4 accepted + 2 malformed
    assert [s.offset for _, s in good] == [0, 2, 2, 3]
    assert [(d.offset, d.reason) for d in bad] == [(1, "malformed"), (2, "malformed")]
    assert bad[0].detail.startswith("ArithmeticError: cannot hash mac#")  # redacted, like raw
    assert all(bomb not in d.detail and bomb not in d.raw for d in bad)
    assert "wifi.probes/1 offset 1 dead-lettered as malformed" in caplog.text and bomb not in caplog.text


def test_an_error_inside_one_transaction_dead_letters_that_transaction_only() -> None:
    good, bad = decode("pos.transactions", [txn(), txn(txn_id="BOOM"), txn(txn_id="T2")], ExplodingTransactionDecoder)
    assert [s.txn_id for _, s in good] == ["T1", "T2"]
    assert [(d.offset, d.reason, d.detail) for d in bad] == [(1, "malformed", "KeyError: 'BOOM'")]
