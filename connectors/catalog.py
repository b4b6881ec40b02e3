"""The catalog: malls, stores, sensors, merchants (loyalty) and campaigns (configuration, not a stream of facts).

Written as YAML by people, loaded into Redis by ``storepulse catalog load``, and read by
every engine process, which re-checks Redis every few seconds. This module is the typed
model and the YAML codec; ``state.catalog`` stores it in Redis.

>>> cat = Catalog.from_yaml('''
... malls: [{mall_id: M1, name: Joy City, tz: Asia/Shanghai, lat: 31.2, lon: 121.4}]
... stores:
...   - {store_id: S1, merchant_id: X, mall_id: M1, name: Beans, category: coffee,
...      tz: Asia/Shanghai, lat: 31.2, lon: 121.4, hours: "10:00-22:00"}
... sensors:
...   - {sensor_id: AP-1, mall_id: M1, store_id: S1, zone: S1-floor, lat: 31.2, lon: 121.4}
... ''')
>>> cat.sensor("AP-1").visit_rssi, cat.site_of_store("S1"), cat.sensor("AP-404"), cat.store("S1").currency
(-70, 'M1', None, 'CNY')
"""

from __future__ import annotations

import hashlib
import re
from functools import cached_property
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import yaml

from storepulse.errors import CatalogError


def _plain(value: object) -> object:
    """numpy scalars (a catalog built in code) encode as the Python numbers they hold."""
    item = getattr(value, "item", None)
    if item is None:
        raise NotImplementedError(f"cannot encode {type(value).__name__}")
    return item()


class Mall(msgspec.Struct, kw_only=True, frozen=True):
    mall_id: str
    name: str
    tz: str
    lat: float
    lon: float


class Store(msgspec.Struct, kw_only=True, frozen=True):
    """A shop. ``mall_id`` is None for a street store, which is then its own site.
    ``hours``: local opening hours, ``HH:MM-HH:MM``, the same every day. ``currency``: the
    ISO 4217 code of its till; every amount of its transactions is in its minor units."""

    store_id: str
    merchant_id: str
    name: str
    category: str
    tz: str
    lat: float
    lon: float
    mall_id: str | None = None
    hours: str = "10:00-22:00"
    currency: str = "CNY"


_CURRENCY = re.compile(r"[A-Z]{3}")
_HOURS = re.compile(r"(?:[01]\d|2[0-3]):[0-5]\d-(?:[01]\d|2[0-3]):[0-5]\d")


class PeopleCalibration(msgspec.Struct, kw_only=True, frozen=True):
    """How a sensor's device counts become people (``flows.people``): a device counts at
    ``floor`` dBm or stronger, and people = max(0, ``intercept`` + sum of ``coef[feature]``
    x log1p(feature)) per 5-minute window. Fitted from labelled data by ``storepulse eval
    occupancy --train DIR``; the default is the fit on the lab's development days."""

    floor: int = -65
    intercept: float = 0.0
    coef: dict[str, float] = msgspec.field(default_factory=dict)


class Sensor(msgspec.Struct, kw_only=True, frozen=True):
    """A WiFi sensor. ``store_id`` None means a mall common area (corridor, atrium).

    A device heard at ``visit_rssi`` dBm or stronger is inside the sensor's store; one
    inside for ``min_dwell_s`` is a visitor. ``visit_timeout_s`` without a strong sighting
    ends a visit. ``people``: the sensor's calibration from devices to people (None: the
    default, ``flows.people.DEFAULT_CALIBRATION``).
    """

    sensor_id: str
    mall_id: str | None
    zone: str
    lat: float
    lon: float
    store_id: str | None = None
    visit_rssi: int = -70
    min_dwell_s: int = 120
    visit_timeout_s: int = 600
    people: PeopleCalibration | None = None


class Level(msgspec.Struct, kw_only=True, frozen=True):
    """One loyalty level. A member reaches it when their qualifying spend is at least
    ``upgrade_at`` and leaves it when it falls below ``downgrade_below`` (<= ``upgrade_at``:
    the gap keeps a member near a threshold from flapping). ``multiplier_pct`` scales the
    points a sale earns (100: the base rate)."""

    name: str
    upgrade_at: int
    downgrade_below: int = 0
    multiplier_pct: int = 100


class Loyalty(msgspec.Struct, kw_only=True, frozen=True):
    """A merchant's points programme (docs/member-profiles.md, "Loyalty").

    A sale earns ``amount * points_per_unit * level pct * birthday pct // (unit_minor *
    100 * 100)`` points: ``unit_minor`` minor units (100 fen: one yuan) earn
    ``points_per_unit`` points at the base rate. ``birthday_multiplier_pct`` applies to
    sales in the member's birthday month (100: no bonus). A member's positive balance
    expires when ``expiry_days`` pass without a purchase at the merchant (0: never).
    Levels are ranked by ``upgrade_at``, the first at 0; qualifying spend is the net spend
    at the merchant over the last ``qualify_days`` (at most 400)."""

    unit_minor: int = 100
    points_per_unit: int = 1
    birthday_multiplier_pct: int = 100
    expiry_days: int = 365
    qualify_days: int = 365
    levels: list[Level] = msgspec.field(default_factory=lambda: [Level(name="member", upgrade_at=0)])

    def problem(self) -> str | None:
        """What is wrong with the programme, or None.

        >>> levels = [Level(name="a", upgrade_at=0), Level(name="b", upgrade_at=10, downgrade_below=20)]
        >>> Loyalty(levels=levels).problem()
        "level 'b': downgrade_below 20 is above upgrade_at 10"
        """
        if self.unit_minor <= 0 or self.points_per_unit < 0:
            return "unit_minor must be > 0 and points_per_unit >= 0"
        if self.birthday_multiplier_pct < 0 or any(level.multiplier_pct < 0 for level in self.levels):
            return "multipliers must be >= 0"
        if self.expiry_days < 0 or not 1 <= self.qualify_days <= 400:
            return "expiry_days must be >= 0 and qualify_days 1..400"
        if not self.levels or self.levels[0].upgrade_at != 0:
            return "the first level must have upgrade_at 0"
        for lower, level in zip(self.levels, self.levels[1:], strict=False):
            if level.upgrade_at <= lower.upgrade_at:
                return f"level {level.name!r}: upgrade_at must rise from level to level"
        for level in self.levels:
            if level.downgrade_below > level.upgrade_at:
                return (f"level {level.name!r}: downgrade_below {level.downgrade_below} "
                        f"is above upgrade_at {level.upgrade_at}")
        if len({level.name for level in self.levels}) != len(self.levels):
            return "level names must be unique"
        return None


class Merchant(msgspec.Struct, kw_only=True, frozen=True):
    """A merchant (the platform's customer): its stores name it; ``loyalty`` is its points
    programme, None for none (its sales then earn no points)."""

    merchant_id: str
    name: str = ""
    loyalty: Loyalty | None = None


class Holiday(msgspec.Struct, kw_only=True, frozen=True):
    """A local date that is not a normal day for sales (``YYYY-MM-DD`` in each store's
    zone). ``factor``: sales expected against a normal day of that weekday (1.6: busier,
    0.4: quieter), None when unknown (the drop detector then neither scores nor learns the
    day). ``stores``: the stores it applies to; empty for every store."""

    date: str
    name: str = ""
    factor: float | None = None
    stores: list[str] = []


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class Campaign(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=False):
    campaign_id: str
    name: str
    store_id: str | None = None
    mall_id: str | None = None
    trigger: str = "enter"


class Catalog(msgspec.Struct, kw_only=True, frozen=True, dict=True):
    malls: list[Mall] = []
    stores: list[Store] = []
    sensors: list[Sensor] = []
    campaigns: list[Campaign] = []
    merchants: list[Merchant] = []
    holidays: list[Holiday] = []

    @classmethod
    def from_yaml(cls, text: str) -> Catalog:
        try:
            data = yaml.safe_load(text) or {}
            catalog = msgspec.convert(data, type=cls)
        except (yaml.YAMLError, msgspec.ValidationError) as exc:
            raise CatalogError(f"catalog YAML is invalid: {exc}") from exc
        catalog.validate()
        return catalog

    def to_yaml(self) -> str:
        return yaml.safe_dump(msgspec.to_builtins(self, enc_hook=_plain), sort_keys=False)

    def to_json(self) -> bytes:
        return msgspec.json.encode(self, enc_hook=_plain)

    @classmethod
    def from_json(cls, data: bytes) -> Catalog:
        return msgspec.json.decode(data, type=cls)

    @cached_property
    def version(self) -> str:
        """Content hash: two equal catalogs have the same version."""
        return hashlib.sha256(self.to_json()).hexdigest()[:16]

    def validate(self) -> None:
        """Raise CatalogError naming the first broken reference, bad time zone or currency."""
        for kind, ids in (
            ("mall", [m.mall_id for m in self.malls]),
            ("store", [s.store_id for s in self.stores]),
            ("sensor", [s.sensor_id for s in self.sensors]),
            ("merchant", [m.merchant_id for m in self.merchants]),
        ):
            if len(ids) != len(set(ids)):
                dup = sorted({i for i in ids if ids.count(i) > 1})
                raise CatalogError(f"duplicate {kind} ids: {', '.join(dup)}")
        for tz in {m.tz for m in self.malls} | {s.tz for s in self.stores}:
            try:
                ZoneInfo(tz)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise CatalogError(f"unknown IANA time zone {tz!r}") from exc
        for store in self.stores:
            if store.mall_id is not None and store.mall_id not in self._malls:
                raise CatalogError(f"store {store.store_id}: unknown mall {store.mall_id!r}")
            if not _HOURS.fullmatch(store.hours):
                raise CatalogError(f"store {store.store_id}: hours {store.hours!r} are not HH:MM-HH:MM local time "
                                   "such as 10:00-22:00 (00:00-00:00: always open)")
            if not _CURRENCY.fullmatch(store.currency):
                raise CatalogError(f"store {store.store_id}: currency {store.currency!r} is not a "
                                   "3-letter uppercase ISO 4217 code such as CNY")
        for holiday in self.holidays:
            if not _DATE.fullmatch(holiday.date):
                raise CatalogError(f"holiday {holiday.date!r}: not a YYYY-MM-DD date")
            if holiday.factor is not None and holiday.factor < 0:
                raise CatalogError(f"holiday {holiday.date}: factor {holiday.factor} is negative")
            unknown = [s for s in holiday.stores if s not in self._stores]
            if unknown:
                raise CatalogError(f"holiday {holiday.date}: unknown stores {', '.join(unknown)}")
        for merchant in self.merchants:
            problem = merchant.loyalty.problem() if merchant.loyalty is not None else None
            if problem is not None:
                raise CatalogError(f"merchant {merchant.merchant_id}: loyalty: {problem}")
        for sensor in self.sensors:
            if sensor.store_id is not None and sensor.store_id not in self._stores:
                raise CatalogError(f"sensor {sensor.sensor_id}: unknown store {sensor.store_id!r}")
            if sensor.mall_id is not None and sensor.mall_id not in self._malls:
                raise CatalogError(f"sensor {sensor.sensor_id}: unknown mall {sensor.mall_id!r}")
            if sensor.store_id is None and sensor.mall_id is None:
                raise CatalogError(f"sensor {sensor.sensor_id}: needs a store_id or a mall_id")
            if sensor.people is not None:
                from flows.people import FEATURES  # the features a calibration may weigh

                unknown = sorted(set(sensor.people.coef) - set(FEATURES))
                if unknown:
                    raise CatalogError(f"sensor {sensor.sensor_id}: people: unknown features {', '.join(unknown)}")

    @cached_property
    def _malls(self) -> dict[str, Mall]:
        return {m.mall_id: m for m in self.malls}

    @cached_property
    def _stores(self) -> dict[str, Store]:
        return {s.store_id: s for s in self.stores}

    @cached_property
    def _sensors(self) -> dict[str, Sensor]:
        return {s.sensor_id: s for s in self.sensors}

    @cached_property
    def _loyalty(self) -> dict[str, Loyalty]:
        return {m.merchant_id: m.loyalty for m in self.merchants if m.loyalty is not None}

    def holidays_of(self, store_id: str) -> dict[str, float | None]:
        """The store's holidays: local date -> expected factor (None: unknown), as the drop
        detector takes them (``flows.drop_detector.SalesDropDetector``).

        >>> cat = Catalog(holidays=[Holiday(date="2026-10-01", factor=1.6), Holiday(date="2026-10-02", stores=["S9"])])
        >>> cat.holidays_of("S1"), cat.holidays_of("S9")
        ({'2026-10-01': 1.6}, {'2026-10-01': 1.6, '2026-10-02': None})
        """
        return {h.date: h.factor for h in self.holidays if not h.stores or store_id in h.stores}

    def loyalty(self, merchant_id: str) -> Loyalty | None:
        """The merchant's points programme, None if it has none (or is not listed)."""
        return self._loyalty.get(merchant_id)

    def mall(self, mall_id: str) -> Mall | None:
        return self._malls.get(mall_id)

    def store(self, store_id: str) -> Store | None:
        return self._stores.get(store_id)

    def sensor(self, sensor_id: str) -> Sensor | None:
        return self._sensors.get(sensor_id)

    def site_of_store(self, store_id: str) -> str | None:
        """The site (state key) a store's events go to: its mall, or itself if on a street."""
        store = self._stores.get(store_id)
        if store is None:
            return None
        return store.mall_id or store.store_id

    def site_of_sensor(self, sensor: Sensor) -> str:
        if sensor.store_id is not None:
            site = self.site_of_store(sensor.store_id)
            assert site is not None  # validate() checked the reference
            return site
        assert sensor.mall_id is not None
        return sensor.mall_id

    def sites(self) -> set[str]:
        """Every site: each mall, and each street store (a store outside any mall)."""
        return {m.mall_id for m in self.malls} | {s.store_id for s in self.stores if s.mall_id is None}

    def scopes_of_site(self, site: str) -> tuple[tuple[str, str], ...]:
        """Every footfall scope of a site, sorted: its mall, its stores, its sensors' zones.

        >>> cat = Catalog.from_yaml("{malls: [{mall_id: M1, name: J, tz: UTC, lat: 0, lon: 0}], "
        ...     "stores: [{store_id: S1, merchant_id: X, mall_id: M1, name: B, category: c, tz: UTC, lat: 0, lon: 0}], "
        ...     "sensors: [{sensor_id: C-1, mall_id: M1, zone: hall, lat: 0, lon: 0}]}")
        >>> cat.scopes_of_site("M1"), cat.scopes_of_site("nowhere")
        ((('mall', 'M1'), ('store', 'S1'), ('zone', 'hall')), ())
        """
        return self._scopes_by_site.get(site, ())

    @cached_property
    def _scopes_by_site(self) -> dict[str, tuple[tuple[str, str], ...]]:
        found: dict[str, set[tuple[str, str]]] = {m.mall_id: {("mall", m.mall_id)} for m in self.malls}
        for store in self.stores:
            found.setdefault(store.mall_id or store.store_id, set()).add(("store", store.store_id))
        for sensor in self.sensors:
            found.setdefault(self.site_of_sensor(sensor), set()).add(("zone", sensor.zone))
        return {site: tuple(sorted(scopes)) for site, scopes in found.items()}

    def tz_of_site(self, site: str) -> str:
        mall = self._malls.get(site)
        if mall is not None:
            return mall.tz
        store = self._stores.get(site)
        return store.tz if store is not None else "UTC"
