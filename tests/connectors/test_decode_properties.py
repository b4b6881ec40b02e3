"""Generated payloads of every shape fed to each decoder: nothing escapes, nothing is lost.

For every generated batch: ``decode`` returns (it never raises), every reason is one of
``Reason``, and read = accepted + rejected, per message. The number of records a message
must yield is worked out here from the payload as it was built, not by the decoder: one
per message, except a batched probe report (a known sensor id and a list of
observations, nested no deeper than the limit), which yields one per observation.

Why hypothesis rather than a hand-rolled fuzzer: its strategies compose (recursive JSON,
mutated fields, byte edits) into payloads no table would list, and when a property
fails it shrinks the batch to the smallest payload that still fails and replays it,
which a random loop would have to reimplement. Examples are bounded (``max_examples``,
no deadline, no example database) so the test takes seconds on a busy 2-core machine.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.catalog import Catalog
from connectors.decode import Limits, ProbeDecoder, Reason, TransactionDecoder, nesting_depth
from connectors.privacy import DeviceHasher
from connectors.records import RawBatch, RawMessage

CATALOG = Catalog.from_yaml("""
malls: [{mall_id: M1, name: Joy, tz: Asia/Shanghai, lat: 0, lon: 0}]
stores:
  - {store_id: S1, merchant_id: X, mall_id: M1, name: A, category: coffee, tz: Asia/Shanghai, lat: 0, lon: 0}
  - {store_id: S8, merchant_id: Y, name: B, category: tea, tz: Asia/Hong_Kong, lat: 0, lon: 0, currency: HKD}
sensors:
  - {sensor_id: AP-1, mall_id: M1, store_id: S1, zone: S1-floor, lat: 0, lon: 0}
  - {sensor_id: AP-2, mall_id: M1, zone: M1-corridor, lat: 0, lon: 0}
""")
SENSORS = {"AP-1", "AP-2"}
NOW_MS = 1_763_870_400_000
LIMITS = Limits(clock=lambda: NOW_MS / 1000, max_message_bytes=300_000)
REASONS = {r.value for r in Reason}
SETTINGS = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# ---- payloads ---------------------------------------------------------------------------

leaf = (
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: 2**70 and -2**70 too
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_value = st.recursive(
    leaf,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=12,
)
mutant = json_value | st.sampled_from(
    ["NaN", "Infinity", "-0", "", "\ud800", "a4:5e:60:1b:22:9c\n", "AP-404", "HKD", "cny", 2**63, 2**64, -(2**63) - 1,
     10**30, 1e308, -1, 0, NOW_MS * 1000, [], {}]
)
ts = st.integers(NOW_MS - 60_000, NOW_MS)
mac = st.sampled_from(["a4:5e:60:1b:22:9c", "A6-11-22-33-44-55", "a45e601b229d", "zz:zz", "a4:5e:60:1b:22"])


def mutated(base: st.SearchStrategy[dict[str, Any]], fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """``base`` with some fields replaced by anything, some removed, and unknown ones added."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        value = dict(draw(base))
        value.update(draw(st.dictionaries(st.sampled_from(fields), mutant, max_size=3)))
        for name in draw(st.sets(st.sampled_from(fields), max_size=2)):
            value.pop(name, None)
        extra = st.text(max_size=6).filter(lambda k: k not in fields and k != "observations")
        value.update(draw(st.dictionaries(extra, json_value, max_size=2)))
        return value

    return build()


observation = st.fixed_dictionaries(
    {"mac": mac, "rssi": st.integers(-130, 10), "ts": ts},
    optional={"seq": st.integers(-1, 5000), "ie": st.lists(st.integers(0, 255), max_size=4),
              "vendor_ie": st.lists(st.integers(0, 2**24), max_size=2), "ch": st.integers(1, 165)},
)
OBS_FIELDS = ["mac", "rssi", "ts", "seq", "ie", "vendor_ie", "ch"]
probe = st.builds(lambda o, s: {"sensor_id": s, **o}, observation, st.sampled_from(["AP-1", "AP-2", "AP-404"]))
single_probe = probe | mutated(probe, ["sensor_id", *OBS_FIELDS])
observations = st.lists(observation | mutated(observation, OBS_FIELDS) | json_value, max_size=6)
batched_probe = st.fixed_dictionaries(
    {  # one_of picks a branch evenly: mostly a known sensor and a list of observations
        "sensor_id": st.sampled_from(["AP-1", "AP-2"]) | st.sampled_from(["AP-1", "AP-404"]) | mutant,
        "observations": observations | observations | mutant,
    },
    optional={"ts": mutant, "mac": mutant, "rssi": mutant},  # strict decoding fails, lenient goes on
)
item = st.fixed_dictionaries(
    {"sku": st.text(max_size=4), "category": st.just("coffee"), "qty": st.integers(-1, 3),
     "unit_price": st.integers(-1, 10**6)}
)
sale = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["sale", "refund"]),
        "txn_id": st.text(max_size=8),
        "ts": ts,
        "merchant_id": st.just("X"),
        "store_id": st.sampled_from(["S1", "S8", "S404"]),
        "amount": st.integers(-1, 10**9),
        "currency": st.sampled_from(["CNY", "CNY", "HKD", "USD"]),
        "payment": st.sampled_from(["alipay", "wechat", "cash", "seashells"]),
        "items": st.lists(item, max_size=3),
    }
)
transaction = sale | mutated(sale, ["type", "txn_id", "ts", "store_id", "amount", "currency", "payment", "items"])


def depth(value: object) -> int:
    """Nesting of a JSON value built here (shallow, so recursion is fine)."""
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


def is_unicode(value: object) -> bool:
    """False if a string in ``value`` has a lone surrogate (U+D800 alone): its JSON escape is
    no Unicode text, so the message is no JSON a parser must read."""
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def probe_records(value: object) -> int:
    """How many records a probe payload is: one per observation of a batched report from a
    known sensor, else one."""
    if (
        isinstance(value, dict)
        and is_unicode(value)
        and isinstance(value.get("sensor_id"), str)
        and value["sensor_id"] in SENSORS
        and isinstance(value.get("observations"), list)
        and depth(value) <= LIMITS.max_nesting_depth
    ):
        return len(value["observations"])
    return 1


def as_json(value: object) -> bytes:
    return json.dumps(value).encode()


def deep(depth_: int, shape: str) -> bytes:
    if shape == "arrays":
        return b"[" * depth_ + b"]" * depth_
    if shape == "objects":
        return b'{"a":' * depth_ + b"0" + b"}" * depth_
    return b"[0," * (depth_ - 1) + b"[0]" + b"]" * (depth_ - 1)


@st.composite
def too_deep(draw: st.DrawFn, good: bytes) -> bytes:
    """Nesting over the limit (up to 200 KB, under the size limit), alone or inside an
    otherwise good message."""
    levels = draw(st.integers(LIMITS.max_nesting_depth + 1, 40_000))
    inner = deep(levels, draw(st.sampled_from(["arrays", "objects", "stairs"])))
    return draw(st.sampled_from([inner, good[:-1] + b', "x": ' + inner + b"}"]))


@st.composite
def byte_edits(draw: st.DrawFn, good: bytes) -> bytes:
    """A good single message cut short, or with bytes (invalid UTF-8 among them) changed."""
    data = bytearray(good)
    if draw(st.booleans()):
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        data[at : at + 1] = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b'"', b"[", b"}", b""]))
    return bytes(data)


ANY_BYTES = st.binary(max_size=300) | st.sampled_from(
    [
        b"", b"NaN", b"[NaN]", b"1e999", b"-", b"\xef\xbb\xbf{}", b'"\\ud800"', b"x" * 300_001,
        b'{"sensor_id": "AP-1", "ts": NaN, "mac": "a4:5e:60:1b:22:9c", "rssi": -60}',
        b'{"sensor_id": "AP-1", "ts": 1e400, "mac": "a4:5e:60:1b:22:9c", "rssi": -60}',
        b'{"sensor_id": "AP-1", "sensor_id": 7}',
        b'{"sensor_id": "AP-1", "observations": [1, 2',
    ]
)
GOOD_PROBE = as_json({"sensor_id": "AP-1", "ts": NOW_MS, "mac": "a4:5e:60:1b:22:9c", "rssi": -60, "ie": [0, 1]})
GOOD_TXN = as_json({"type": "sale", "txn_id": "T", "ts": NOW_MS, "merchant_id": "X", "store_id": "S1", "amount": 5,
                    "currency": "CNY", "payment": "cash",
                    "items": [{"sku": "K", "category": "c", "qty": 1, "unit_price": 5}]})

# Each message comes with the number of records it must yield and, if it must be
# dead-lettered for one reason, that reason.
Case = tuple[bytes, int, str | None]
probe_messages: st.SearchStrategy[Case] = st.one_of(
    ANY_BYTES.map(lambda b: (b, 1, None)),
    json_value.map(lambda v: (as_json(v), probe_records(v), None)),
    single_probe.map(lambda v: (as_json(v), 1, None)),
    batched_probe.map(lambda v: (as_json(v), probe_records(v), None)),
    batched_probe.map(lambda v: (as_json(v), probe_records(v), None)),  # twice: the one shape that is not 1
    byte_edits(GOOD_PROBE).map(lambda b: (b, 1, None)),
    too_deep(GOOD_PROBE).map(lambda b: (b, 1, "too_deep")),
)
txn_messages: st.SearchStrategy[Case] = st.one_of(
    ANY_BYTES.map(lambda b: (b, 1, None)),
    json_value.map(lambda v: (as_json(v), 1, None)),
    transaction.map(lambda v: (as_json(v), 1, None)),
    byte_edits(GOOD_TXN).map(lambda b: (b, 1, None)),
    too_deep(GOOD_TXN).map(lambda b: (b, 1, "too_deep")),
)


def check(decoder: ProbeDecoder | TransactionDecoder, topic: str, cases: list[Case]) -> None:
    batch = RawBatch(topic=topic, partition=0, messages=[RawMessage(i, None, v) for i, (v, _, _) in enumerate(cases)])
    good, bad = decoder.decode(batch, CATALOG)  # must not raise
    assert {d.reason for d in bad} <= REASONS
    per_offset = Counter([r.offset for _, r in good] + [d.offset for d in bad])
    assert per_offset == Counter({i: n for i, (_, n, _) in enumerate(cases) if n})  # read = accepted + rejected
    for i, (_, _, reason) in enumerate(cases):
        if reason is not None:
            assert [d.reason for d in bad if d.offset == i] == [reason]


@SETTINGS
@given(st.lists(probe_messages, min_size=1, max_size=6))
def test_any_probe_payload_is_accepted_or_dead_lettered(cases: list[Case]) -> None:
    check(ProbeDecoder(DeviceHasher(b"secret"), LIMITS), "wifi.probes", cases)


@SETTINGS
@given(st.lists(txn_messages, min_size=1, max_size=6))
def test_any_transaction_payload_is_accepted_or_dead_lettered(cases: list[Case]) -> None:
    check(TransactionDecoder(DeviceHasher(b"secret"), LIMITS), "pos.transactions", cases)


@SETTINGS
@given(st.lists(batched_probe, min_size=1, max_size=4))
def test_a_batched_report_counts_once_per_observation(reports: list[dict[str, Any]]) -> None:
    cases: list[Case] = [(as_json(r), probe_records(r), None) for r in reports]
    check(ProbeDecoder(DeviceHasher(b"secret"), LIMITS), "wifi.probes", cases)


bracket_text = st.text(alphabet=st.sampled_from('[]{}"\\ab\u00e9\u4e2d'), max_size=8)
bracket_json = st.recursive(
    leaf | bracket_text,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(bracket_text, kids, max_size=3),
    max_leaves=20,
)


@SETTINGS
@given(bracket_json, st.booleans())
def test_nesting_depth_equals_the_depth_of_the_value(value: object, ascii_only: bool) -> None:
    # strings full of brackets, quotes and backslashes do not count; checked against a walk
    # of the value itself
    assert nesting_depth(json.dumps(value, ensure_ascii=ascii_only).encode()) == depth(value)
