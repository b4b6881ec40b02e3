"""The first step: decode, validate and pseudonymise whole batches of raw input.

Reads ``RawBatch`` (one partition read of ``wifi.probes`` or ``pos.transactions``) and
returns two streams: accepted records, tagged with the site (mall or street store) whose
state they update, and ``DeadLetter`` records, each with one reason from ``Reason``.
MAC addresses are replaced by keyed device ids here; nothing after this step sees one,
and dead-letter ``raw`` bytes are redacted the same way.

A record is a Kafka message, except that each observation of a batched probe report is
a record of its own, so that ``read = accepted + dead-lettered`` holds exactly.

No message can stop the engine: any exception while decoding or validating one record
dead-letters that record (``malformed``; the error is logged with its topic, partition
and offset, as it is a bug to report), never its batch. JSON nested deeper than
``Limits.max_nesting_depth`` is dead-lettered as ``too_deep`` before it is parsed, as the
parser recurses once per level.

>>> import msgspec
>>> from connectors.records import RawBatch, RawMessage
>>> cat = Catalog()  # an empty catalog: every sensor is unknown
>>> dec = ProbeDecoder(DeviceHasher(b"k"), Limits(clock=lambda: 1.0))
>>> good, bad = dec.decode(RawBatch(topic="wifi.probes", partition=0, messages=[
...     RawMessage(7, b"AP-9", b'{"sensor_id": "AP-9", "ts": 1000, "mac": "a4:5e:60:1b:22:9c", "rssi": -60}'),
...     RawMessage(8, None, b"{oops")]), cat)
>>> good, [(d.offset, d.reason) for d in bad]
([], [(7, 'unknown_sensor'), (8, 'bad_json')])
"""

from __future__ import annotations

import logging
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import accumulate
from typing import TypeVar

import msgspec

from connectors.catalog import Catalog
from connectors.privacy import DAY_MS, DeviceHasher, normalize_mac, redact
from connectors.records import RawBatch, Sale, Sighting
from connectors.schemas import DeadLetter, Observation, ProbeReport, Transaction

log = logging.getLogger(__name__)
T = TypeVar("T")


class Reason(StrEnum):
    """Why an input record was dead-lettered: a small fixed set, used as a metric label."""

    BAD_JSON = "bad_json"  # not UTF-8 JSON
    BAD_SCHEMA = "bad_schema"  # a field missing or of the wrong type
    BAD_VALUE = "bad_value"  # well-typed but impossible: negative amount, bad MAC, RSSI > 0
    UNKNOWN_SENSOR = "unknown_sensor"
    UNKNOWN_STORE = "unknown_store"
    TS_FUTURE = "ts_future"  # newer than the wall clock plus the allowed skew
    TS_PAST = "ts_past"  # older than the maximum event age
    OVERSIZED = "oversized"
    TOO_DEEP = "too_deep"  # arrays/objects nested deeper than the limit (checked before parsing)
    MALFORMED = "malformed"  # decoding or validating it raised an unexpected error (logged: a bug)
    WRONG_CURRENCY = "wrong_currency"  # a transaction not in its store's currency (the catalog's)
    LATE = "late"  # behind the site's event clock by more than the allowed lateness


@dataclass(frozen=True)
class Limits:
    """Bounds every input record must satisfy; ``clock`` gives wall time in seconds."""

    max_message_bytes: int = 1 << 20
    max_nesting_depth: int = 32  # valid input nests 4 levels at most (a batched report's ie)
    deadletter_raw_bytes: int = 4096
    max_event_age_ms: int = 7 * 86_400_000
    max_clock_skew_ms: int = 300_000
    clock: Callable[[], float] = field(default=time.time)

    def check_ts(self, ts: int, now_ms: int) -> Reason | None:
        if ts > now_ms + self.max_clock_skew_ms:
            return Reason.TS_FUTURE
        if ts < now_ms - self.max_event_age_ms:
            return Reason.TS_PAST
        return None


class Rejection(Exception):
    """Raised inside decoding to dead-letter one record (``raw``: its bytes, if not the message's)."""

    def __init__(self, reason: Reason, detail: str, raw: bytes | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.raw = raw


class _BatchEnvelope(msgspec.Struct):
    """A batched probe report whose observations are checked one at a time."""

    sensor_id: str
    observations: list[msgspec.Raw]


class _Decoder:
    def __init__(self, hasher: DeviceHasher, limits: Limits) -> None:
        self.hasher = hasher
        self.limits = limits

    def dead_letter(self, batch: RawBatch, offset: int, raw: bytes | None, reason: Reason, detail: str) -> DeadLetter:
        data = raw or b""
        cut = self.limits.deadletter_raw_bytes
        # Redact before cutting, so no MAC is cut in half and left readable; redaction only
        # lengthens text, so a partial MAC at the 2*cut edge lands beyond the final cut.
        clean = redact(data[: 2 * cut], self.hasher)[:cut]
        # A parser's message may quote the value it refused, a MAC among them.
        detail = redact(detail.encode("utf-8", "replace"), self.hasher).decode("utf-8", "replace")
        return DeadLetter(
            topic=batch.topic,
            partition=batch.partition,
            offset=offset,
            reason=reason.value,
            detail=detail,
            raw=clean.decode("utf-8", "replace"),
            raw_truncated=len(data) > cut,
        )

    def unexpected(self, batch: RawBatch, offset: int, raw: bytes | None, exc: Exception) -> DeadLetter:
        """The dead letter of a record whose decoding raised ``exc`` (not a Rejection): a
        bug, so it is logged, redacted, with where it was raised."""
        reason = Reason.TOO_DEEP if isinstance(exc, RecursionError) else Reason.MALFORMED
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        text = f"{type(exc).__name__}: {exc}"[:300]
        detail = redact(text.encode("utf-8", "replace"), self.hasher).decode("utf-8", "replace")
        log.warning("%s/%d offset %d dead-lettered as %s: %s%s",
                    batch.topic, batch.partition, offset, reason.value, detail, where)
        return self.dead_letter(batch, offset, raw, reason, detail)

    def _parse(self, value: bytes | None, decoder: msgspec.json.Decoder[T]) -> T:
        """A message decoded to its schema type, or a Rejection (oversized, too deep, not
        JSON, the wrong shape)."""
        data = self._bounded(value)
        try:
            return decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise _schema_error(exc, data) from None

    def _bounded(self, value: bytes | None) -> bytes:
        """The message's bytes, or a Rejection if they are over the size or nesting limit.

        Only a message with more ``[``/``{`` than the depth limit can nest deeper, so an
        ordinary message costs two byte counts and is never scanned.
        """
        data = value or b""
        if len(data) > self.limits.max_message_bytes:
            raise Rejection(Reason.OVERSIZED, f"{len(data)} bytes")
        limit = self.limits.max_nesting_depth
        if data.count(b"[") + data.count(b"{") > limit:
            depth = nesting_depth(data)
            if depth > limit:
                raise Rejection(Reason.TOO_DEEP, f"nested {depth} levels deep, over the limit of {limit}")
        return data


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))
# each bracket as a signed byte: +1 for an opener, -1 (0xFF) for a closer
_BRACKET_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def nesting_depth(data: bytes) -> int:
    r"""How deep arrays and objects nest in the JSON text ``data``; brackets inside strings
    (escaped quotes included) do not count. Exact for valid JSON; for broken JSON at least
    the depth a parser reaches before it finds the break. Linear, with no recursion.

    >>> nesting_depth(b'{"a": [1, {"b": "]]}\\"[[["}]}'), nesting_depth(b'[{"[": "}"}]'), nesting_depth(b"7")
    (3, 2, 0)
    >>> nesting_depth(b"[" * 100_000 + b"]" * 100_000)
    100000
    """
    # With no backslash every quote opens or closes a string, so what lies outside strings
    # is every other piece; else an escaped quote may be inside one: find them one by one.
    outside = _JSON_STRING.sub(b"", data) if b"\\" in data else b"".join(data.split(b'"')[::2])
    steps = memoryview(outside.translate(_BRACKET_STEP, _NOT_BRACKET)).cast("b")
    return max(accumulate(steps), default=0)


def _schema_error(exc: msgspec.DecodeError, value: bytes) -> Rejection:
    """bad_schema if ``value`` is JSON of the wrong shape, bad_json if it is not JSON at all
    (a typed decoder reports a shape error first even when the JSON is also broken)."""
    if isinstance(exc, msgspec.ValidationError):
        try:
            msgspec.json.decode(value)
        except msgspec.DecodeError as broken:
            return Rejection(Reason.BAD_JSON, str(broken))
        return Rejection(Reason.BAD_SCHEMA, str(exc))
    return Rejection(Reason.BAD_JSON, str(exc))


_CANONICAL_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")


class ProbeDecoder(_Decoder):
    """``wifi.probes`` -> (site, Sighting) and dead letters."""

    _json = msgspec.json.Decoder(ProbeReport)

    def decode(self, batch: RawBatch, catalog: Catalog) -> tuple[list[tuple[str, Sighting]], list[DeadLetter]]:
        good: list[tuple[str, Sighting]] = []
        bad: list[DeadLetter] = []
        now_ms = int(self.limits.clock() * 1000)
        # A phone is heard by several sensors and probes many times per batch: hash each
        # (MAC, day) once per batch. The map lives for this call only.
        devices: dict[tuple[str, int], int] = {}
        for msg in batch.messages:
            try:
                value = self._bounded(msg.value)
                try:
                    report = self._json.decode(value)
                    observations: list[Observation | Rejection] = list(self._observations(report))
                    sensor_id = report.sensor_id
                except msgspec.DecodeError as exc:
                    sensor_id, observations = self._lenient(value, exc)
                sensor = catalog.sensor(sensor_id)
                if sensor is None:
                    raise Rejection(Reason.UNKNOWN_SENSOR, f"sensor {sensor_id!r} is not in the catalog")
                site = catalog.site_of_sensor(sensor)
                batched = len(observations) != 1 or not isinstance(observations[0], Observation)
            except Rejection as rej:
                bad.append(self.dead_letter(batch, msg.offset, msg.value, rej.reason, rej.detail))
                continue
            except Exception as exc:  # one message must never stop the engine
                bad.append(self.unexpected(batch, msg.offset, msg.value, exc))
                continue
            for obs in observations:
                if isinstance(obs, Rejection):
                    bad.append(self.dead_letter(batch, msg.offset, obs.raw, obs.reason, obs.detail))
                    continue
                try:
                    reason, detail = self._check(obs, now_ms)
                    if reason is not None:
                        raw = msgspec.json.encode(obs) if batched else msg.value
                        bad.append(self.dead_letter(batch, msg.offset, raw, reason, detail))
                        continue
                    day = obs.ts // DAY_MS
                    device = devices.get((obs.mac, day))
                    if device is None:
                        device = devices[(obs.mac, day)] = self.hasher.device_normalized(obs.mac, obs.ts)
                    good.append(
                        (
                            site,
                            Sighting(
                                ts=obs.ts,
                                sensor_id=sensor.sensor_id,
                                store_id=sensor.store_id,
                                zone=sensor.zone,
                                device=device,
                                randomized=bool(int(obs.mac[:2], 16) & 0x02),
                                rssi=obs.rssi,
                                seq=None if obs.seq is None else self.hasher.seq(obs.seq, obs.ts),
                                fingerprint=self.hasher.fingerprint(obs.ie, obs.vendor_ie),
                                offset=msg.offset,
                            ),
                        )
                    )
                except Exception as exc:  # this observation only; good.append is its last step
                    bad.append(self.unexpected(batch, msg.offset, None if batched else msg.value, exc))
        return good, bad

    _envelope = msgspec.json.Decoder(_BatchEnvelope)
    _observation = msgspec.json.Decoder(Observation)

    def _lenient(self, value: bytes, exc: msgspec.DecodeError) -> tuple[str, list[Observation | Rejection]]:
        """A batched report that failed as a whole: validate its observations one by one,
        so one mistyped observation does not take the good ones with it."""
        try:
            envelope = self._envelope.decode(value)
        except msgspec.DecodeError:
            raise _schema_error(exc, value) from None
        out: list[Observation | Rejection] = []
        for raw in envelope.observations:
            try:
                out.append(self._observation.decode(raw))
            except msgspec.DecodeError as obs_exc:
                out.append(Rejection(Reason.BAD_SCHEMA, f"observation: {obs_exc}", bytes(raw)))
        return envelope.sensor_id, out

    @staticmethod
    def _observations(report: ProbeReport) -> list[Observation]:
        if report.observations is not None:
            return report.observations
        if report.mac is None or report.rssi is None or report.ts is None:
            missing = [f for f in ("ts", "mac", "rssi") if getattr(report, f) is None]
            raise Rejection(Reason.BAD_SCHEMA, f"missing {', '.join(missing)} (or observations)")
        return [
            Observation(
                mac=report.mac,
                rssi=report.rssi,
                ts=report.ts,
                seq=report.seq,
                ie=report.ie,
                vendor_ie=report.vendor_ie,
                ch=report.ch,
            )
        ]

    def _check(self, obs: Observation, now_ms: int) -> tuple[Reason | None, str]:
        if not _CANONICAL_MAC.fullmatch(obs.mac):
            mac = normalize_mac(obs.mac)
            if mac is None:
                return Reason.BAD_VALUE, "mac is not a MAC address"
            obs.mac = mac
        if not -120 <= obs.rssi <= 0:
            return Reason.BAD_VALUE, f"rssi {obs.rssi} dBm is outside -120..0"
        if obs.seq is not None and not 0 <= obs.seq <= 4095:
            return Reason.BAD_VALUE, f"seq {obs.seq} is outside 0..4095"
        ts_reason = self.limits.check_ts(obs.ts, now_ms)
        if ts_reason is not None:
            return ts_reason, f"ts {obs.ts} is outside the accepted event-time range"
        return None, ""


class TransactionDecoder(_Decoder):
    """``pos.transactions`` -> (site, Sale) and dead letters."""

    _json = msgspec.json.Decoder(Transaction)

    def decode(self, batch: RawBatch, catalog: Catalog) -> tuple[list[tuple[str, Sale]], list[DeadLetter]]:
        good: list[tuple[str, Sale]] = []
        bad: list[DeadLetter] = []
        now_ms = int(self.limits.clock() * 1000)
        for msg in batch.messages:
            try:
                txn = self._parse(msg.value, self._json)
                site = self._check(txn, catalog, now_ms)
                good.append(
                    (
                        site,
                        Sale(
                            ts=txn.ts,
                            txn_id=txn.txn_id,
                            store_id=txn.store_id,
                            amount=txn.amount,
                            refund=txn.type == "refund",
                            member_id=txn.member_id,
                            offset=msg.offset,
                            merchant_id=txn.merchant_id,
                            payment=txn.payment,
                            ref_txn_id=txn.ref_txn_id,
                            items=txn.items,
                            points_redeemed=txn.points_redeemed,
                            produced_ms=msg.timestamp_ms,
                        ),
                    )
                )
            except Rejection as rej:
                bad.append(self.dead_letter(batch, msg.offset, msg.value, rej.reason, rej.detail))
            except Exception as exc:  # one message must never stop the engine
                bad.append(self.unexpected(batch, msg.offset, msg.value, exc))
        return good, bad

    def _check(self, txn: Transaction, catalog: Catalog, now_ms: int) -> str:
        if txn.amount < 0:
            raise Rejection(Reason.BAD_VALUE, f"amount {txn.amount} is negative")
        if not txn.txn_id or not txn.store_id:
            raise Rejection(Reason.BAD_VALUE, "empty txn_id or store_id")
        if txn.points_redeemed < 0 or (txn.points_redeemed and txn.type == "refund"):
            raise Rejection(Reason.BAD_VALUE, f"points_redeemed {txn.points_redeemed}: a sale's is >= 0, a refund's 0")
        if any(item.qty <= 0 or item.unit_price < 0 for item in txn.items):
            raise Rejection(Reason.BAD_VALUE, "an item has a non-positive qty or negative price")
        ts_reason = self.limits.check_ts(txn.ts, now_ms)
        if ts_reason is not None:
            raise Rejection(ts_reason, f"ts {txn.ts} is outside the accepted event-time range")
        store, site = catalog.store(txn.store_id), catalog.site_of_store(txn.store_id)
        if store is None or site is None:
            raise Rejection(Reason.UNKNOWN_STORE, f"store {txn.store_id!r} is not in the catalog")
        if txn.currency != store.currency:
            raise Rejection(
                Reason.WRONG_CURRENCY,
                f"currency {txn.currency[:8]!r}, but store {txn.store_id} takes {store.currency} (catalog)",
            )
        return site
