"""Scenarios: what the mall simulator simulates, as a typed, validated YAML file.

Reads a bundled scenario by name (``simulators/scenarios/<name>.yaml``) or any YAML path;
writes nothing. Guarantees: a loaded ``Scenario`` is complete and consistent (shares in
0-1, positive sizes, parsable times, ``start < end`` for every incident); anything else
raises ``ConfigError`` naming the file and the field. Which store, sensor or mall an
incident names is checked by the simulator, which is what knows the ids.

Times of incidents are local ``HH:MM`` on scenario day ``day`` (0 = the first), or ISO
datetimes (with an offset, or read in the scenario's time zone).

>>> s = Scenario.from_yaml('''
... name: tiny
... start_date: "2025-03-14"
... stores_per_mall: 4
... incidents:
...   - {kind: sensor_dark, sensor: AP-0102, start: "12:00", end: "13:30"}
... ''')
>>> s.dates()
[datetime.date(2025, 3, 14)]
>>> s.incidents[0].window_ms(s)
(1741924800000, 1741930200000)
>>> Scenario.from_yaml("name: x\\nphone_share: 1.5")
Traceback (most recent call last):
...
storepulse.errors.ConfigError: scenario <string>: phone_share must be in [0, 1], got 1.5
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import yaml

from connectors.catalog import Loyalty
from storepulse.errors import ConfigError

SCENARIO_DIR = Path(__file__).with_name("scenarios")
PAYMENTS = ("wechat", "alipay", "bestpay", "andpay", "unionpay", "card", "cash")
_HHMM = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")


class _Incident(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    start: str
    end: str
    day: int = 0

    def window_ms(self, scenario: Scenario, now: datetime | None = None) -> tuple[int, int]:
        """The incident's ``[start, end)`` in epoch milliseconds UTC."""
        dates = scenario.dates(now)
        return (
            scenario.moment_ms(self.start, dates[self.day]),
            scenario.moment_ms(self.end, dates[self.day]),
        )


class SalesDrop(_Incident, tag="sales_drop", tag_field="kind", frozen=True):
    """The store's purchase probability is multiplied by ``factor`` during the window."""

    store: str
    factor: float


class PaymentOutage(_Incident, tag="payment_outage", tag_field="kind", frozen=True):
    """Payments with ``payment`` fail during the window: shoppers pay otherwise or leave."""

    payment: str


class SensorDark(_Incident, tag="sensor_dark", tag_field="kind", frozen=True):
    """The sensor sends nothing during the window."""

    sensor: str


class FlashCrowd(_Incident, tag="flash_crowd", tag_field="kind", frozen=True):
    """Arrivals at the mall are multiplied by ``multiplier`` during the window."""

    mall: str
    multiplier: float


Incident = SalesDrop | PaymentOutage | SensorDark | FlashCrowd


class Radio(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Radio model: log-distance path loss with walls, noise and a sensitivity floor."""

    rssi_at_1m_dbm: float = -40.0
    path_loss_exponent: float = 2.7
    wall_loss_db: float = 8.0
    noise_db: float = 4.0
    device_offset_db: float = 2.0
    sensitivity_dbm: float = -95.0
    sensor_height_m: float = 1.8
    # Share of the frames in range that a sensor captures: a sniffer hopping over the
    # channels misses the frames sent on the others (two lab sniffers in one room both
    # heard only 18% of the randomised MACs either heard). 1: every frame in range.
    capture_share: float = 1.0


class Scenario(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Everything a simulation run depends on, besides its seed."""

    name: str
    description: str = ""
    tz: str = "Asia/Shanghai"
    start_date: str = "yesterday"  # or an ISO date; "yesterday": the days end yesterday
    days: int = 1
    malls: int = 1
    stores_per_mall: int = 10
    street_stores: int = 0
    shoppers_per_mall_per_day: int = 3000
    street_passers_per_store_per_day: int = 800
    street_capture_share: float = 0.15
    mall_hours: str = "10:00-22:00"
    street_hours: str = "08:00-21:00"
    weekend_factor: float = 1.4
    phone_share: float = 0.9
    randomized_mac_share: float = 0.4
    mac_rotation_median_min: float = 15.0
    mac_rotation_sigma: float = 0.5
    # "legacy": every phone randomises with randomized_mac_share and rotates about every
    # mac_rotation_median_min; "realistic": phones probe as their model does
    # (``simulators.phones.REALISTIC_MODELS``: stable MACs of old phones, a new MAC per
    # burst or per interval, seq continuing or restarting, shared ie lists), and only
    # mac_rotation_sigma (the spread of interval rotations) is read of those three.
    mac_behaviour: Literal["legacy", "realistic"] = "legacy"
    # Devices that never leave (``simulators.fixed``), none by default: per store, the
    # mean number of pieces of equipment probing around the clock (mostly stable MACs)
    # and of staff phones present from opening to closing. Not people: the truth keeps
    # them in ``devices``, never in ``people`` or ``visits``.
    store_devices_per_store: float = 0.0
    staff_phones_per_store: float = 0.0
    member_share: float = 0.3
    push_consent_share: float = 0.6
    new_member_share: float = 0.1
    probe_interval_s: float = 30.0
    probe_interval_sigma: float = 0.5
    batched_sensor_share: float = 0.5
    batch_interval_s: float = 5.0
    sniffer_extras_share: float = 1.0
    refund_share: float = 0.015
    # Messy POS exports (``simulators.messy``), all off by default:
    zero_sale_share: float = 0.0  # of sales: amount 0 (free item, write-off, adjustment)
    partial_refund_share: float = 0.0  # of refunds: less than the sale's amount
    split_refund_share: float = 0.0  # of partial refunds: the rest refunded later that day
    unlinked_refund_share: float = 0.0  # of refunds: sent without ref_txn_id
    refund_max_days: int = 0  # a refund comes 0 to this many days after its sale
    duplicate_share: float = 0.0  # of transactions: the same message sent twice
    duplicate_delay_s: float = 120.0  # mean delay (exponential) of the repeat
    erase_share: float = 0.0  # of members who bought: erased at night 2-6 days before the end
    # Loyalty (docs/member-profiles.md, "Loyalty"), off by default: merchant_id -> its
    # programme, put in the catalog's ``merchants`` (``simulators.shops.loyalty_merchants``);
    # ``redeem_share`` of member sales there pay with points (``simulators.pos.redeem_points``).
    loyalty: dict[str, Loyalty] = {}
    redeem_share: float = 0.0
    bad_record_share: float = 0.0
    radio: Radio = Radio()
    incidents: list[Incident] = []

    # ---- loading -----------------------------------------------------------------------

    @classmethod
    def load(cls, name_or_path: str | Path) -> Scenario:
        """A bundled scenario by name (``demo``), or a YAML file by path."""
        path = Path(name_or_path)
        if not path.suffix and not path.exists():
            path = SCENARIO_DIR / f"{name_or_path}.yaml"
            if not path.exists():
                raise ConfigError(
                    f"no bundled scenario {str(name_or_path)!r}; bundled: {', '.join(bundled())}"
                )
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read scenario file {path}: {exc}") from exc
        return cls.from_yaml(text, source=str(path))

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<string>") -> Scenario:
        """Parse and validate. ``extends: <bundled name>`` starts from that scenario's
        fields; the file's own fields win."""
        data = _read_mapping(text, source)
        seen = {source}
        while "extends" in data:
            base = str(data.pop("extends"))
            path = SCENARIO_DIR / f"{base}.yaml"
            if base in seen or not path.exists():
                raise ConfigError(f"scenario {source}: cannot extend {base!r} "
                                  f"(bundled: {', '.join(bundled())})")
            seen.add(base)
            data = {**_read_mapping(path.read_text(encoding="utf-8"), str(path)), **data}
        try:
            scenario = msgspec.convert(data, type=cls)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"scenario {source}: {exc}") from exc
        scenario.validate(source)
        return scenario

    def replace(self, **changes: object) -> Scenario:
        """A validated copy with some fields changed."""
        out = msgspec.structs.replace(self, **changes)
        out.validate()
        return out

    # ---- checks ------------------------------------------------------------------------

    def validate(self, source: str = "<string>") -> None:
        """Raise ConfigError naming the first field that is out of range."""

        def fail(msg: str) -> None:
            raise ConfigError(f"scenario {source}: {msg}")

        for field in (
            "phone_share", "randomized_mac_share", "member_share", "push_consent_share",
            "new_member_share", "batched_sensor_share", "sniffer_extras_share",
            "street_capture_share", "refund_share", "bad_record_share", "zero_sale_share",
            "partial_refund_share", "split_refund_share", "unlinked_refund_share",
            "duplicate_share", "erase_share", "redeem_share",
        ):
            value = getattr(self, field)
            if not 0.0 <= value <= 1.0:
                fail(f"{field} must be in [0, 1], got {value}")
        for field in ("days", "stores_per_mall", "shoppers_per_mall_per_day",
                      "street_passers_per_store_per_day"):
            if getattr(self, field) < 1:
                fail(f"{field} must be at least 1, got {getattr(self, field)}")
        for field in ("malls", "street_stores"):
            if getattr(self, field) < 0:
                fail(f"{field} must not be negative, got {getattr(self, field)}")
        for field in ("store_devices_per_store", "staff_phones_per_store"):
            if not 0 <= getattr(self, field) <= 20:
                fail(f"{field} must be in [0, 20], got {getattr(self, field)}")
        if self.malls + self.street_stores == 0:
            fail("needs at least one mall or street store")
        if self.malls > 99 or self.stores_per_mall > 99 or self.street_stores > 99:
            fail("at most 99 malls, 99 stores per mall and 99 street stores")
        if not 0 <= self.refund_max_days <= 365:
            fail(f"refund_max_days must be in [0, 365], got {self.refund_max_days}")
        for field in ("mac_rotation_median_min", "probe_interval_s", "batch_interval_s",
                      "weekend_factor", "duplicate_delay_s"):
            if not getattr(self, field) > 0:
                fail(f"{field} must be positive, got {getattr(self, field)}")
        for field in ("mac_rotation_sigma", "probe_interval_sigma"):
            if not 0 <= getattr(self, field) <= 3:
                fail(f"{field} must be in [0, 3], got {getattr(self, field)}")
        for merchant, programme in self.loyalty.items():
            problem = programme.problem()
            if problem is not None:
                fail(f"loyalty[{merchant!r}]: {problem}")
        if not 0 < self.radio.capture_share <= 1:
            fail(f"radio.capture_share must be in (0, 1], got {self.radio.capture_share}")
        if self.redeem_share and not self.loyalty:
            fail("redeem_share needs a loyalty programme")
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError):
            fail(f"tz: unknown IANA time zone {self.tz!r}")
        if self.start_date != "yesterday":
            try:
                date.fromisoformat(self.start_date)
            except ValueError:
                fail(f"start_date must be 'yesterday' or an ISO date, got {self.start_date!r}")
        for field in ("mall_hours", "street_hours"):
            try:
                open_min, close_min = parse_hours(getattr(self, field))
            except ValueError as exc:
                fail(f"{field}: {exc}")
            if close_min - open_min < 120:
                fail(f"{field}: open for at least two hours")
        for i, incident in enumerate(self.incidents):
            where = f"incidents[{i}] ({incident.__struct_config__.tag})"
            if not 0 <= incident.day < self.days:
                fail(f"{where}: day must be in [0, {self.days - 1}], got {incident.day}")
            try:
                first = self.moment_ms(incident.start, date(2025, 1, 1))
                last = self.moment_ms(incident.end, date(2025, 1, 1))
            except ValueError as exc:
                fail(f"{where}: {exc}")
            if _is_hhmm(incident.start) == _is_hhmm(incident.end) and not first < last:
                fail(f"{where}: start {incident.start!r} must be before end {incident.end!r}")
            if isinstance(incident, SalesDrop) and not 0 <= incident.factor <= 1:
                fail(f"{where}: factor must be in [0, 1], got {incident.factor}")
            if isinstance(incident, FlashCrowd) and not 1 <= incident.multiplier <= 50:
                fail(f"{where}: multiplier must be in [1, 50], got {incident.multiplier}")
            if isinstance(incident, PaymentOutage) and incident.payment not in PAYMENTS:
                fail(f"{where}: payment must be one of {', '.join(PAYMENTS)}")

    # ---- time --------------------------------------------------------------------------

    def dates(self, now: datetime | None = None) -> list[date]:
        """The local dates simulated. ``yesterday``: the run ends with the last complete
        local day before ``now`` (default: the wall clock), so no event lies in the future."""
        if self.start_date == "yesterday":
            zone = ZoneInfo(self.tz)
            today = (now.astimezone(zone) if now else datetime.now(zone)).date()
            first = today - timedelta(days=self.days)
        else:
            first = date.fromisoformat(self.start_date)
        return [first + timedelta(days=d) for d in range(self.days)]

    def local_ms(self, day: date, minute_of_day: float) -> int:
        """Epoch ms UTC of a local minute of the day (``24:00`` is the next midnight)."""
        midnight = datetime.combine(day, time(0), tzinfo=ZoneInfo(self.tz))
        return int(midnight.timestamp() * 1000) + int(round(minute_of_day * 60_000))

    def moment_ms(self, text: str, day: date) -> int:
        """Epoch ms UTC of ``HH:MM`` on ``day``, or of an ISO datetime."""
        match = _HHMM.match(text)
        if match:
            return self.local_ms(day, int(match.group(1)) * 60 + int(match.group(2)))
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"time {text!r} is neither HH:MM nor an ISO datetime") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=ZoneInfo(self.tz))
        return int(moment.timestamp() * 1000)


def _read_mapping(text: str, source: str) -> dict:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"scenario {source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"scenario {source}: expected a mapping of fields at the top")
    return data


def _is_hhmm(text: str) -> bool:
    return bool(_HHMM.match(text))


def parse_hours(text: str) -> tuple[int, int]:
    """``HH:MM-HH:MM`` as minutes of the day.

    >>> parse_hours("10:00-22:00")
    (600, 1320)
    """
    parts = text.split("-")
    if len(parts) != 2 or not all(_HHMM.match(p.strip()) for p in parts):
        raise ValueError(f"expected HH:MM-HH:MM, got {text!r}")
    first, last = (int(p.strip()[:2]) * 60 + int(p.strip()[3:]) for p in parts)
    if not first < last <= 24 * 60:
        raise ValueError(f"opening {text!r} must end after it starts, on the same day")
    return first, last


def bundled() -> list[str]:
    """Names of the scenarios shipped in ``simulators/scenarios``."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


IncidentKind = Literal["sales_drop", "payment_outage", "sensor_dark", "flash_crowd"]
