"""Decoding ``members.events``: every kind and every rejection, literal bytes in, exact
records out. Device ids are checked against the probe decoder's sightings of the same MAC."""

from __future__ import annotations

import json
import logging

import pytest

from connectors.catalog import Catalog
from connectors.decode import Limits, ProbeDecoder
from connectors.member_events import MemberEventDecoder
from connectors.privacy import DAY_MS, DeviceHasher
from connectors.records import MemberChange, RawBatch, RawMessage

CATALOG = Catalog.from_yaml("""
malls: [{mall_id: M1, name: Joy, tz: Asia/Shanghai, lat: 0, lon: 0}]
stores:
  - {store_id: S1, merchant_id: X, mall_id: M1, name: A, category: coffee, tz: Asia/Shanghai, lat: 0, lon: 0}
sensors:
  - {sensor_id: AP-1, mall_id: M1, store_id: S1, zone: S1-floor, lat: 0, lon: 0}
""")
NOW_MS = 1_763_870_400_000
KEY = b"secret"
MAC = "a4:5e:60:1b:22:9c"  # stable (0xa4 & 0x02 == 0)
RANDOM_MAC = "a6:11:22:33:44:55"  # randomised (0xa6 & 0x02 != 0)
LIMITS = Limits(clock=lambda: NOW_MS / 1000, max_message_bytes=1000)


def decode(*values: bytes, hasher: DeviceHasher | None = None):
    batch = RawBatch(
        topic="members.events", partition=2, messages=[RawMessage(20 + i, None, v) for i, v in enumerate(values)]
    )
    return MemberEventDecoder(hasher or DeviceHasher(KEY), LIMITS).decode(batch)


def event(type_: str, **fields: object) -> bytes:
    return json.dumps({"type": type_, "member_id": "m1", "ts": NOW_MS, **fields}).encode()


def sighting_device(mac: str, ts: int) -> int:
    """The device id the probe decoder gives a sighting of ``mac`` at ``ts``."""
    value = json.dumps({"sensor_id": "AP-1", "ts": ts, "mac": mac, "rssi": -60}).encode()
    batch = RawBatch(topic="wifi.probes", partition=0, messages=[RawMessage(0, None, value)])
    [(_, sighting)], [] = ProbeDecoder(DeviceHasher(KEY), LIMITS).decode(batch, CATALOG)
    return sighting.device


def test_each_kind_of_event_becomes_its_change() -> None:
    good, bad = decode(
        event("signup", store_id="S1"),
        event("signup"),
        event("bind_device", mac=MAC),
        event("unbind_device", mac=MAC.upper().replace(":", "-")),
        event("consent", push=False),
        event("profile", birthday="1990-07-14", tags=["vip", "coffee", "vip"]),
        event("profile"),
        event("erase", member_id="m2", ts=NOW_MS - 5),
    )
    assert bad == []
    device = sighting_device(MAC, NOW_MS)
    assert good == [
        ("m1", MemberChange(ts=NOW_MS, member_id="m1", kind="signup", offset=20, store_id="S1")),
        ("m1", MemberChange(ts=NOW_MS, member_id="m1", kind="signup", offset=21)),
        ("m1", MemberChange(ts=NOW_MS, member_id="m1", kind="bind_device", offset=22, device=device)),
        ("m1", MemberChange(ts=NOW_MS, member_id="m1", kind="unbind_device", offset=23, device=device)),
        ("m1", MemberChange(ts=NOW_MS, member_id="m1", kind="consent", offset=24, push=False)),
        # the year is dropped; tags sorted, the duplicate "vip" once
        (
            "m1",
            MemberChange(
                ts=NOW_MS, member_id="m1", kind="profile", offset=25, birthday="07-14", tags=["coffee", "vip"]
            ),
        ),
        ("m1", MemberChange(ts=NOW_MS, member_id="m1", kind="profile", offset=26)),
        ("m2", MemberChange(ts=NOW_MS - 5, member_id="m2", kind="erase", offset=27)),
    ]


def test_a_bound_mac_has_the_device_id_of_its_sightings() -> None:
    yesterday = NOW_MS - DAY_MS
    good, bad = decode(
        event("bind_device", mac=MAC, ts=yesterday),
        event("bind_device", mac=RANDOM_MAC),
        event("bind_device", mac=RANDOM_MAC, ts=yesterday),
    )
    assert bad == []
    devices = [c.device for _, c in good]
    assert devices == [
        sighting_device(MAC, yesterday),
        sighting_device(RANDOM_MAC, NOW_MS),
        sighting_device(RANDOM_MAC, yesterday),
    ]
    # a stable MAC is one device on every day; a randomised one is a new device each UTC day
    assert devices[0] == sighting_device(MAC, NOW_MS)
    assert devices[1] != devices[2]


LONG_TAG = "t" * 41
TS_RANGE = {"ts_future": NOW_MS + 30 * DAY_MS, "ts_past": NOW_MS - 400 * DAY_MS}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b'{"type": "consent", "member_id": ', "bad_json"),
        (b"\xff\xfe not utf-8", "bad_json"),
        (event("vote"), "bad_schema"),  # unknown type
        (json.dumps({"member_id": "m1", "ts": NOW_MS, "push": True}).encode(), "bad_schema"),  # no type
        (event("consent"), "bad_schema"),  # push missing
        (event("consent", push="yes"), "bad_schema"),
        (event("bind_device"), "bad_schema"),  # mac missing
        (event("profile", tags=["vip", 7]), "bad_schema"),
        (event("erase", member_id=None), "bad_schema"),
        (event("erase", ts="today"), "bad_schema"),
        (event("erase", member_id=""), "bad_value"),
        (event("bind_device", mac="not-a-mac"), "bad_value"),
        (event("unbind_device", mac="a4:5e:60:1b:22"), "bad_value"),
        (event("bind_device", mac="a4:5e-60:1b:22:9c"), "bad_value"),  # mixed separators
        (event("signup", member_id=MAC), "bad_value"),  # a MAC in free text is personal data
        (event("signup", store_id=f"S1 {MAC}"), "bad_value"),
        (event("profile", tags=["vip", MAC.upper().replace(":", "-")]), "bad_value"),
        (event("profile", birthday="1990-02-30"), "bad_value"),  # no such day
        (event("profile", birthday="1990-13-01"), "bad_value"),
        (event("profile", birthday="07-14"), "bad_value"),
        (event("profile", birthday="1990-7-14"), "bad_value"),
        (event("profile", birthday="1990/07/14"), "bad_value"),
        (event("profile", birthday="\u0661\u0669\u0669\u0660-07-14"), "bad_value"),  # Arabic-Indic digits
        (event("profile", tags=[f"t{i}" for i in range(21)]), "bad_value"),
        (event("profile", tags=["vip", ""]), "bad_value"),
        (event("profile", tags=["vip", LONG_TAG]), "bad_value"),
        (event("bind_device", mac=MAC, ts=TS_RANGE["ts_future"]), "ts_future"),
        (event("consent", push=True, ts=TS_RANGE["ts_past"]), "ts_past"),
        (event("signup", pad="x" * 2000), "oversized"),
        (event("signup", pad=json.loads("[" * 40 + "]" * 40)), "too_deep"),
    ],
)
def test_each_bad_event_gets_its_reason(value: bytes, reason: str) -> None:
    good, bad = decode(value)
    assert good == []
    assert [(d.topic, d.partition, d.offset, d.reason) for d in bad] == [("members.events", 2, 20, reason)]
    assert MAC not in bad[0].raw + bad[0].detail


def test_edge_values_that_are_accepted() -> None:
    good, bad = decode(
        event("profile", birthday="2000-02-29", tags=[f"t{i:02}" for i in range(20)]),  # a leap day; 20 tags
        event("profile", tags=["x", "t" * 40] + ["x"] * 18),  # 20 as sent, 2 unique
        event("bind_device", mac="A45E601B229C"),  # bare notation
    )
    assert bad == []
    assert [(c.birthday, len(c.tags)) for _, c in good[:2]] == [("02-29", 20), (None, 2)]
    assert good[2][1].device == sighting_device(MAC, NOW_MS)


def test_no_mac_leaves_in_a_dead_letter() -> None:
    escaped = event("bind_device", mac=MAC, ts=TS_RANGE["ts_future"]).replace(b"a4:5e", b"\\u0061\\u0034\\u003a5e")
    good, bad = decode(
        event("bind_device", mac=MAC, ts=TS_RANGE["ts_future"]),
        escaped,  # the MAC written with JSON escapes is still redacted
        event(MAC),  # a MAC as the type: the parser's error quotes it
        event("bind_device", mac=MAC, note="call 13812345678"),
    )
    assert [d.reason for d in bad] == ["ts_future", "ts_future", "bad_schema"]
    for dead in bad:
        assert MAC not in dead.raw + dead.detail and "a45e601b229c" not in dead.raw.replace(":", "")
    assert "mac#" in bad[0].raw and "mac#" in bad[1].raw
    assert [c.kind for _, c in good] == ["bind_device"]


def test_an_unexpected_error_dead_letters_that_event_only(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(DeviceHasher):
        def device_normalized(self, mac: str, ts_ms: int) -> int:
            raise RuntimeError(f"hash failed for {mac}")

    with caplog.at_level(logging.WARNING):
        good, bad = decode(event("consent", push=True), event("bind_device", mac=MAC), hasher=Broken(KEY))
    assert [c.kind for _, c in good] == ["consent"]
    assert [(d.offset, d.reason) for d in bad] == [(21, "malformed")]
    assert MAC not in bad[0].raw + bad[0].detail and MAC not in caplog.text
