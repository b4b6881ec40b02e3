"""Decode, validate and pseudonymise whole batches of ``members.events``.

Reads ``RawBatch`` (one partition read of ``members.events``) and returns two streams:
``(member_id, MemberChange)`` records, keyed by member, and ``DeadLetter`` records, each
with one reason from ``Reason``. No catalog is needed. One Kafka message is one record, so
``read = accepted + dead-lettered`` holds per message.

Every message gets the bounds and the catch-all of the other decoders (``too_deep`` and
``oversized`` before parsing; any unexpected exception dead-letters that message as
``malformed`` and is logged; one message never stops the batch). Then a typed decode of
the ``MemberEvent`` union (an unknown ``type`` is ``bad_schema``) and these checks:

- every event: ``member_id`` not empty, and no MAC address (written with ``:`` or ``-``)
  in ``member_id``, ``store_id`` or a tag (``bad_value``); ``ts`` within the accepted
  event-time range (``ts_future`` / ``ts_past``);
- ``bind_device`` / ``unbind_device``: ``mac`` is a MAC address (``bad_value``), replaced
  by the same keyed device id its sightings get at that ``ts`` (``DeviceHasher.
  device_normalized``): a stable MAC binds to the device of all its sightings; a
  randomised MAC to that UTC day's device only, as it is never linked across days;
- ``profile``: ``birthday`` a real ``YYYY-MM-DD`` date, kept as ``MM-DD`` (the year is
  dropped); at most 20 ``tags`` of 1-40 characters each, kept sorted and unique
  (``bad_value`` otherwise).

No MAC leaves this step: accepted records carry device ids, and a dead letter's ``raw``
and ``detail`` are redacted by the shared ``_Decoder.dead_letter`` (MAC addresses and
mobile numbers replaced by keyed tokens, MACs written with JSON ``\\u`` escapes
included), as on every input topic.

Delivery: whatever the source gives (at-least-once; replayed after a restart). A record
carries its offset and ``ts``, so a consumer can drop the duplicates of a replay.

>>> from connectors.decode import Limits
>>> from connectors.privacy import DeviceHasher
>>> from connectors.records import RawBatch, RawMessage
>>> dec = MemberEventDecoder(DeviceHasher(b"k"), Limits(clock=lambda: 1.0))
>>> good, bad = dec.decode(RawBatch(topic="members.events", partition=0, messages=[
...     RawMessage(5, b"m1", b'{"type": "consent", "member_id": "m1", "ts": 1000, "push": true}'),
...     RawMessage(6, b"m1", b'{"type": "profile", "member_id": "m1", "ts": 1000, "birthday": "1990-07-14"}'),
...     RawMessage(7, b"m2", b'{"type": "bind_device", "member_id": "m2", "ts": 1000, "mac": "nope"}'),
...     RawMessage(8, b"m3", b'{"type": "vote", "member_id": "m3", "ts": 1000}')]))
>>> [(key, c.kind, c.offset, c.push, c.birthday) for key, c in good]
[('m1', 'consent', 5, True, None), ('m1', 'profile', 6, None, '07-14')]
>>> [(d.offset, d.reason) for d in bad]
[(7, 'bad_value'), (8, 'bad_schema')]
"""

from __future__ import annotations

import datetime
import re

import msgspec

from connectors.decode import Reason, Rejection, _Decoder
from connectors.privacy import normalize_mac
from connectors.records import MemberChange, RawBatch
from connectors.schemas import (
    BindDevice,
    Consent,
    DeadLetter,
    Erase,
    MemberEvent,
    Profile,
    Signup,
    UnbindDevice,
)

__all__ = ["MAX_TAG_CHARS", "MAX_TAGS", "MemberEventDecoder"]

MAX_TAGS = 20
MAX_TAG_CHARS = 40
_BIRTHDAY = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
# A MAC with separators inside free text (an id or a tag): personal data, never an id. A
# bare 12-digit one is not refused, as a numeric member id may look the same.
_MAC_IN_TEXT = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}(?![0-9A-Fa-f])")
_MAC_CHAR_ESCAPE = re.compile(rb"\\u00(3[0-9a]|4[1-6]|6[1-6]|2d)", re.IGNORECASE)


class MemberEventDecoder(_Decoder):
    """``members.events`` -> (member_id, MemberChange) and dead letters."""

    _json = msgspec.json.Decoder(MemberEvent)

    def decode(self, batch: RawBatch) -> tuple[list[tuple[str, MemberChange]], list[DeadLetter]]:
        good: list[tuple[str, MemberChange]] = []
        bad: list[DeadLetter] = []
        now_ms = int(self.limits.clock() * 1000)
        for msg in batch.messages:
            try:
                change = self._change(self._parse(msg.value, self._json), msg.offset, now_ms)
                good.append((change.member_id, change))
            except Rejection as rej:
                bad.append(self.dead_letter(batch, msg.offset, msg.value, rej.reason, rej.detail))
            except Exception as exc:  # one message must never stop the engine
                bad.append(self.unexpected(batch, msg.offset, msg.value, exc))
        return good, bad

    def _change(self, event: MemberEvent, offset: int, now_ms: int) -> MemberChange:
        if not event.member_id:
            raise Rejection(Reason.BAD_VALUE, "empty member_id")
        texts = [event.member_id, *(event.tags if isinstance(event, Profile) else ())]
        if isinstance(event, Signup) and event.store_id is not None:
            texts.append(event.store_id)
        if any(_MAC_IN_TEXT.search(text) for text in texts):
            raise Rejection(Reason.BAD_VALUE, "a MAC address in member_id, store_id or a tag")
        ts_reason = self.limits.check_ts(event.ts, now_ms)
        if ts_reason is not None:
            raise Rejection(ts_reason, f"ts {event.ts} is outside the accepted event-time range")
        change = MemberChange(ts=event.ts, member_id=event.member_id, kind="", offset=offset)
        if isinstance(event, Signup):
            change.kind, change.store_id = "signup", event.store_id
        elif isinstance(event, BindDevice | UnbindDevice):
            mac = normalize_mac(event.mac)
            if mac is None:
                raise Rejection(Reason.BAD_VALUE, f"mac is not a MAC address ({len(event.mac)} characters)")
            change.kind = "bind_device" if isinstance(event, BindDevice) else "unbind_device"
            change.device = self.hasher.device_normalized(mac, event.ts)  # as a sighting's device
        elif isinstance(event, Consent):
            change.kind, change.push = "consent", event.push
        elif isinstance(event, Profile):
            change.kind = "profile"
            change.birthday = None if event.birthday is None else _month_day(event.birthday)
            change.tags = _tags(event.tags)
        elif isinstance(event, Erase):
            change.kind = "erase"
        else:  # a new member of the union with no rule here yet: a bug, caught and logged
            raise TypeError(f"no rule for member event {type(event).__name__}")
        return change


def _month_day(birthday: str) -> str:
    """``MM-DD`` of a real ``YYYY-MM-DD`` date, or a bad_value Rejection.

    >>> _month_day("2000-02-29"), _month_day("1985-12-01")
    ('02-29', '12-01')
    """
    m = _BIRTHDAY.fullmatch(birthday)
    try:
        if m is None:
            raise ValueError
        datetime.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        raise Rejection(Reason.BAD_VALUE, f"birthday is not a YYYY-MM-DD date ({len(birthday)} characters)") from None
    return f"{m.group(2)}-{m.group(3)}"


def _tags(tags: list[str]) -> list[str]:
    """The tags sorted and unique, or a bad_value Rejection if there are more than
    ``MAX_TAGS`` (as sent, duplicates counted) or one is empty or over ``MAX_TAG_CHARS``.

    >>> _tags(["vip", "coffee", "vip"])
    ['coffee', 'vip']
    """
    if len(tags) > MAX_TAGS:
        raise Rejection(Reason.BAD_VALUE, f"{len(tags)} tags, over the limit of {MAX_TAGS}")
    if not all(1 <= len(tag) <= MAX_TAG_CHARS for tag in tags):
        raise Rejection(Reason.BAD_VALUE, f"a tag is empty or longer than {MAX_TAG_CHARS} characters")
    return sorted(set(tags))
