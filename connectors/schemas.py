"""The topic contracts: typed schemas of every input and output value (JSON, UTF-8).

Times are epoch milliseconds UTC (``ts``); money is an integer in minor units of the
store's currency, which the catalog states (``Store.currency``: fen for CNY), plus that
currency's code. Decoding with these types rejects missing and mistyped fields; range
checks (negative amounts, far-off timestamps, another currency than the store's) live in
``connectors.decode``.

>>> import msgspec
>>> msgspec.json.decode(b'{"sensor_id": "AP-1", "ts": 1, "mac": "a4:5e:60:1b:22:9c", "rssi": -67}',
...                     type=ProbeReport).mac
'a4:5e:60:1b:22:9c'
"""

from __future__ import annotations

from typing import Literal

import msgspec

Payment = Literal["wechat", "alipay", "bestpay", "andpay", "unionpay", "card", "cash"]


# ---- inputs ---------------------------------------------------------------------------


class Item(msgspec.Struct, forbid_unknown_fields=False):
    sku: str
    category: str
    qty: int
    unit_price: int


class Transaction(msgspec.Struct, kw_only=True):
    """A value of ``pos.transactions`` (key ``store_id``)."""

    type: Literal["sale", "refund"]
    txn_id: str
    ts: int
    merchant_id: str
    store_id: str
    amount: int
    currency: str
    payment: Payment
    member_id: str | None = None
    coupon_code: str | None = None
    ref_txn_id: str | None = None
    items: list[Item] = []
    points_redeemed: int = 0  # loyalty points the member paid with (sales only)


class Observation(msgspec.Struct, kw_only=True):
    """One probe request heard by a sensor. ``seq``/``ie``/``vendor_ie``/``ch`` are optional
    sniffer extras: used inside the engine to tell randomised phones apart, never emitted."""

    mac: str
    rssi: int
    ts: int
    seq: int | None = None
    ie: list[int] | None = None
    vendor_ie: list[int] | None = None
    ch: int | None = None


class ProbeReport(msgspec.Struct, kw_only=True):
    """A value of ``wifi.probes`` (key ``sensor_id``): one sighting, or a batch of them."""

    sensor_id: str
    ts: int | None = None
    mac: str | None = None
    rssi: int | None = None
    seq: int | None = None
    ie: list[int] | None = None
    vendor_ie: list[int] | None = None
    ch: int | None = None
    observations: list[Observation] | None = None


class Signup(msgspec.Struct, tag="signup", kw_only=True):
    member_id: str
    ts: int
    store_id: str | None = None


class BindDevice(msgspec.Struct, tag="bind_device", kw_only=True):
    member_id: str
    ts: int
    mac: str


class UnbindDevice(msgspec.Struct, tag="unbind_device", kw_only=True):
    member_id: str
    ts: int
    mac: str


class Consent(msgspec.Struct, tag="consent", kw_only=True):
    member_id: str
    ts: int
    push: bool


class Profile(msgspec.Struct, tag="profile", kw_only=True):
    member_id: str
    ts: int
    birthday: str | None = None
    tags: list[str] = []


class Erase(msgspec.Struct, tag="erase", kw_only=True):
    """Forget this member: profile, bindings and engine state (privacy law's erasure)."""

    member_id: str
    ts: int


MemberEvent = Signup | BindDevice | UnbindDevice | Consent | Profile | Erase
"""A value of ``members.events`` (key ``member_id``), tagged by ``type``."""


# ---- outputs --------------------------------------------------------------------------


class DeadLetter(msgspec.Struct, kw_only=True):
    """A value of ``deadletter`` (key: the source topic). ``raw`` is the input value,
    cut to a bound and with MAC addresses and phone numbers replaced by keyed hashes."""

    topic: str
    partition: int
    offset: int
    reason: str
    detail: str
    raw: str
    raw_truncated: bool = False


class Visit(msgspec.Struct, kw_only=True, frozen=True):
    """One completed store visit (a device inside for at least the store's minimum dwell)."""

    mall_id: str
    store_id: str
    start_ts: int
    end_ts: int
    dwell_s: float
    randomized: bool
    returning: bool


class FootfallMinute(msgspec.Struct, kw_only=True, frozen=True):
    """Counts for one closed event-time minute of one zone, store or mall.

    ``devices*`` are distinct devices heard (the minute, the 15 minutes and the hour that
    end with it); ``visitors_inside`` are devices in a qualified visit during the minute;
    ``sales`` (count and amount, refunds excluded), ``refunds`` (count) and ``payments``
    (sales per payment method) only for stores.
    """

    scope: Literal["zone", "store", "mall"]
    scope_id: str
    mall_id: str
    minute_ts: int
    devices: int
    devices_15m: int
    devices_1h: int
    visitors_inside: int = 0
    sales: int = 0
    sales_amount: int = 0
    refunds: int = 0
    payments: dict[str, int] = msgspec.field(default_factory=dict)


class PeopleCount(msgspec.Struct, kw_only=True, frozen=True):
    """People estimated present at one sensor in a closed 5-minute event-time window
    (``flows.people``), with the counts behind it: ``macs``, distinct MAC addresses heard
    at the sensor's signal floor or stronger; ``devices``, distinct devices after merging
    the randomised MACs of one phone and leaving out always-present devices. A window in
    which the sensor heard nothing has no record."""

    sensor_id: str
    zone: str
    store_id: str | None
    mall_id: str
    window_ts: int
    people: float
    macs: int
    devices: int


class StoreHour(msgspec.Struct, kw_only=True, frozen=True):
    """Running totals of one store for one event-time hour (absolute values, so a replay
    rewrites the same numbers). Visits count in the hour they started.

    ``passers_by``: distinct devices heard at the store's sensors (its outside traffic,
    visitors included); ``capture_rate`` = visitors / passers_by; ``conversion`` =
    sales / visitors. ``dwell_buckets`` counts visits by dwell: <5 min, 5-20, 20-60,
    1-6 h, >6 h.
    """

    mall_id: str
    store_id: str
    hour_ts: int
    visitors: int
    visitors_stable: int
    new_visitors: int
    returning_visitors: int
    passers_by: int
    dwell_median_s: float | None
    dwell_buckets: tuple[int, int, int, int, int]
    sales: int
    sales_amount: int
    capture_rate: float | None
    conversion: float | None


DWELL_BUCKET_BOUNDS_S: tuple[int, ...] = (300, 1200, 3600, 6 * 3600)
DWELL_BUCKET_LABELS: tuple[str, ...] = ("lt_5m", "5_20m", "20_60m", "1_6h", "gt_6h")


def dwell_bucket(dwell_s: float) -> int:
    """Index of the dwell bucket: under 5 min, 5-20, 20-60 min, 1-6 h, over 6 h.

    >>> [dwell_bucket(s) for s in (60, 300, 1199, 3600, 30000)]
    [0, 1, 1, 3, 4]
    """
    for i, bound in enumerate(DWELL_BUCKET_BOUNDS_S):
        if dwell_s < bound:
            return i
    return len(DWELL_BUCKET_BOUNDS_S)


class LoyaltyAccount(msgspec.Struct, kw_only=True, frozen=True):
    """A member's points at one merchant (docs/member-profiles.md, "Loyalty"), as of the
    profile's ``as_of_ts``: ``points`` = earned - redeemed - taken_back + returned - expired
    (exact integers; the balance can be negative when refunds take back points already
    spent). ``qualifying_spend`` is the net spend at the merchant over its ``qualify_days``."""

    merchant_id: str
    level: str
    points: int
    earned: int
    redeemed: int
    taken_back: int
    returned: int
    expired: int
    qualifying_spend: int


class MemberProfile(msgspec.Struct, kw_only=True, frozen=True):
    """One member's profile as of ``as_of_ts``, absolute values (a replay rewrites the same).

    The cross-service contract: ``flows.profiles`` computes it, ``state.profiles`` stores
    it in Redis, other services read it there. Every field and rule is defined in
    docs/member-profiles.md; change that page and this record together. Money in minor
    units of the store's currency, times in epoch milliseconds UTC. ``stores`` is sorted;
    the favourite categories are highest first. None where the page says "if no sales".
    """

    member_id: str
    as_of_ts: int
    sales: int
    refunds: int
    zero_sales: int
    duplicates: int
    gross_spend: int
    refunded: int
    net_spend: int
    avg_ticket: int | None
    first_purchase_ts: int | None
    last_purchase_ts: int | None
    stores: tuple[str, ...]
    spend_30d: int
    spend_90d: int
    purchases_30d: int
    purchases_90d: int
    recency_days: int | None
    rfm: str | None
    favourite_categories: tuple[str, ...]
    favourite_categories_decayed: tuple[str, ...]
    preferred_payment: str | None
    member_since_ts: int | None = None
    push_consent: bool = False
    birthday: str | None = None
    tags: tuple[str, ...] = ()
    devices: int = 0
    birthday_month: bool = False
    loyalty: tuple[LoyaltyAccount, ...] = ()  # one per merchant with a programme, by merchant_id
    segment: str | None = None  # the spending segment learned online (flows.segments)


class MemberErased(msgspec.Struct, kw_only=True, frozen=True):
    """A member was erased at ``ts``: every trace of them goes (the Redis profile included)."""

    member_id: str
    ts: int


class MemberVisits(msgspec.Struct, kw_only=True, frozen=True):
    """A member's stores visited and last seen, as of ``as_of_ts`` (= ``last_seen_ts``, the
    newest ``end_ts`` of their visits). Absolute: it replaces the one before."""

    member_id: str
    as_of_ts: int
    stores_visited: tuple[str, ...]  # sorted
    last_seen_ts: int
    last_seen_store: str


class VisitsErased(msgspec.Struct, kw_only=True, frozen=True):
    """The member was erased at ``ts``: their visits go (the Redis copy included)."""

    member_id: str
    ts: int


class StoreMembers(msgspec.Struct, frozen=True, kw_only=True):
    """A store's members as of its newest member purchase (absolute values)."""

    store_id: str
    as_of_ts: int  # epoch ms: the newest purchase ts seen at the store
    members_active: int  # members with a purchase in (as_of_ts - 30 days, as_of_ts]
    members_repeat: int  # of those, members with two or more
    repurchase_rate: float | None  # members_repeat / members_active; None if none is active


class SalesBucket(msgspec.Struct, frozen=True, kw_only=True):
    """One closed 5-minute bucket of a store's sales against its learned expectation
    (``flows.sales_watch``): ``net_sales`` = sales - refunds, 0 if negative (a bucket of
    refunds sold nothing); ``expected`` is None while
    the store is closed or in its cold start; ``drop_score`` in [0, 1], 0.5 alert-worthy."""

    store_id: str
    bucket_ts: int
    net_sales: int
    expected: float | None
    drop_score: float
    firing: bool


class StoreHealth(msgspec.Struct, frozen=True, kw_only=True):
    """A store's health (``flows.sales_watch``): ``score`` 0-100 from its sales and footfall
    against their expectation over the last week, its conversion against its normal and its
    members' repurchase rate; the parts are beside it (None: not known yet)."""

    store_id: str
    merchant_id: str
    as_of_ts: int
    score: float
    sales_index: float
    footfall_index: float | None
    conversion_index: float | None
    repurchase_rate: float | None
