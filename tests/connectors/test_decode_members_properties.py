"""Generated ``members.events`` payloads of every shape: nothing escapes, nothing is lost,
no MAC leaves.

For every generated batch: ``decode`` returns (it never raises), every reason is one of
``Reason``, each message yields exactly one record (accepted or dead-lettered: read =
accepted + rejected), a message nested over the limit is ``too_deep``, and none of the
MACs the payloads are built from appears in any dead letter or change, in any notation.
The payload strategies are those of ``test_decode_properties.py``, on member events.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.decode import Limits, Reason
from connectors.member_events import MemberEventDecoder
from connectors.privacy import DeviceHasher
from connectors.records import RawBatch, RawMessage
from tests.connectors.test_decode_properties import ANY_BYTES, byte_edits, json_value, mutated, too_deep

NOW_MS = 1_763_870_400_000
LIMITS = Limits(clock=lambda: NOW_MS / 1000, max_message_bytes=300_000)
REASONS = {r.value for r in Reason}
SETTINGS = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
MACS = ["a4:5e:60:1b:22:9c", "A6-11-22-33-44-55", "a45e601b229d", "02:00:00:00:00:01"]
BAD_MACS = ["zz:zz", "a4:5e:60:1b:22", "a4:5e-60:1b:22:9c", ""]
MAC_DIGITS = [re.sub("[^0-9a-f]", "", m.lower()) for m in MACS]
MAC_FORMS = {sep.join(d[i : i + 2] for i in range(0, 12, 2)) for d in MAC_DIGITS for sep in (":", "-", "")}

ts = st.integers(NOW_MS - 8 * 86_400_000, NOW_MS + 600_000)  # some past and future ones
member_id = st.sampled_from(["m1", "m2", ""]) | st.text(alphabet="abc123", max_size=8)
tag = st.text(max_size=42)
FIELDS = ["type", "member_id", "ts", "store_id", "mac", "push", "birthday", "tags"]
member_event = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("signup"), "member_id": member_id, "ts": ts},
        optional={"store_id": st.none() | st.sampled_from(["S1", ""])},
    ),
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["bind_device", "unbind_device"]),
            "member_id": member_id,
            "ts": ts,
            "mac": st.sampled_from(MACS + BAD_MACS),
        }
    ),
    st.fixed_dictionaries({"type": st.just("consent"), "member_id": member_id, "ts": ts, "push": st.booleans()}),
    st.fixed_dictionaries(
        {"type": st.just("profile"), "member_id": member_id, "ts": ts},
        optional={
            "birthday": st.none()
            | st.sampled_from(["1990-07-14", "2000-02-29", "1990-02-30", "07-14"])
            | st.dates().map(str)
            | st.text(max_size=10),
            "tags": st.lists(tag, max_size=22),
        },
    ),
    st.fixed_dictionaries({"type": st.sampled_from(["erase", "vote"]), "member_id": member_id, "ts": ts}),
)
# a MAC (a real one, or inside text) in any field, a tag among them
mac_text = st.sampled_from(MACS[:2] + [MACS[0].upper(), f"id {MACS[1]}", f"{MACS[0]}\n"])
mac_anywhere = st.builds(
    lambda v, field, mac: {**v, field: [mac] if field == "tags" else mac},
    member_event,
    st.sampled_from(FIELDS),
    mac_text,
)
GOOD_BIND = json.dumps({"type": "bind_device", "member_id": "m1", "ts": NOW_MS, "mac": MACS[0]}).encode()

Case = tuple[bytes, str | None]  # a message, and the one reason it must be dead-lettered for, if any
messages: st.SearchStrategy[Case] = st.one_of(
    ANY_BYTES.map(lambda b: (b, None)),
    json_value.map(lambda v: (json.dumps(v).encode(), None)),
    member_event.map(lambda v: (json.dumps(v).encode(), None)),
    member_event.map(lambda v: (json.dumps(v).encode(), None)),
    mutated(member_event, FIELDS).map(lambda v: (json.dumps(v).encode(), None)),
    mac_anywhere.map(lambda v: (json.dumps(v).encode(), None)),
    byte_edits(GOOD_BIND).map(lambda b: (b, None)),
    too_deep(GOOD_BIND).map(lambda b: (b, "too_deep")),
)


def leaks(text: str) -> bool:
    """True if one of the MACs appears in ``text``, in any notation (upper case included)."""
    lower = text.lower()
    return any(form in lower for form in MAC_FORMS)


@SETTINGS
@given(st.lists(messages, min_size=1, max_size=6))
def test_any_member_payload_is_accepted_or_dead_lettered(cases: list[Case]) -> None:
    batch = RawBatch(
        topic="members.events", partition=0, messages=[RawMessage(i, None, v) for i, (v, _) in enumerate(cases)]
    )
    good, bad = MemberEventDecoder(DeviceHasher(b"secret"), LIMITS).decode(batch)  # must not raise
    assert {d.reason for d in bad} <= REASONS
    per_offset = Counter([c.offset for _, c in good] + [d.offset for d in bad])
    assert per_offset == Counter(range(len(cases)))  # read = accepted + rejected, one each
    for i, (_, reason) in enumerate(cases):
        if reason is not None:
            assert [d.reason for d in bad if d.offset == i] == [reason]
    for key, change in good:
        assert key == change.member_id != ""
        assert not leaks(" ".join(map(str, [change.member_id, change.store_id, change.birthday, *change.tags])))
    for dead in bad:
        assert not leaks(dead.raw + dead.detail)


def _mac_free(value: Any) -> bool:
    return not leaks(json.dumps(value))


@SETTINGS
@given(mutated(member_event, FIELDS).filter(_mac_free) | member_event)
def test_a_valid_event_is_accepted_with_its_fields(value: dict[str, Any]) -> None:
    # an independent check of the accepted ones: each field as sent, or as the rules say
    batch = RawBatch(topic="members.events", partition=0, messages=[RawMessage(0, None, json.dumps(value).encode())])
    good, bad = MemberEventDecoder(DeviceHasher(b"secret"), LIMITS).decode(batch)
    assert len(good) + len(bad) == 1
    if good:
        [(_, change)] = good
        assert (change.kind, change.member_id, change.ts) == (value["type"], value["member_id"], value["ts"])
        if change.kind == "profile":
            assert change.tags == sorted(set(value.get("tags", [])))
            assert change.birthday == (None if value.get("birthday") is None else value["birthday"][5:])
        assert (change.device is not None) == (change.kind in ("bind_device", "unbind_device"))
