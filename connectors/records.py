"""Records that move between the engine's steps (not topic contracts).

Every source, Kafka or in-process simulator, emits ``RawBatch``: the messages one read
of one partition returned, as bytes with their offsets. One item per read keeps the
per-item cost of bytewax off the hot path. ``idle=True`` with no messages says the
partition has had nothing new for a while, so it stops holding event time back.

After decoding, sightings and sales travel to their mall as ``SiteBatch``: the accepted
records of one partition read for one site (a mall, or a street store), and how far that
partition has got in event time (``progress_ts``), which drives the site's event clock.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from connectors.schemas import Item


class PartitionId(NamedTuple):
    """One input partition: the owner of the ``topic/partition`` text used as a key.

    It is the bytewax partition key of a Kafka partition and the name a site's event
    clock tracks progress under (Kafka topic names cannot contain ``/``).

    >>> p = PartitionId("wifi.probes", 3)
    >>> str(p), PartitionId.parse("wifi.probes/3") == p
    ('wifi.probes/3', True)
    >>> PartitionId.parse("wifi.probes")
    Traceback (most recent call last):
    ...
    ValueError: not a topic/partition name: 'wifi.probes'
    """

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}"

    @classmethod
    def parse(cls, text: str) -> PartitionId:
        topic, sep, partition = text.rpartition("/")
        if not sep or not topic or not partition.isdigit():
            raise ValueError(f"not a topic/partition name: {text!r}")
        return cls(topic, int(partition))


class RawMessage(msgspec.Struct, array_like=True, gc=False):
    """One message as read. ``timestamp_ms``: its Kafka timestamp (the producer's create
    time), only from sources asked for it (``pos.transactions``: sale-to-profile latency)."""

    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None


class RawBatch(msgspec.Struct, kw_only=True):
    topic: str
    partition: int
    messages: list[RawMessage]
    idle: bool = False

    @property
    def source(self) -> str:
        """``topic/partition`` (``PartitionId``): the key event-time progress is tracked under."""
        return str(PartitionId(self.topic, self.partition))


class Sighting(msgspec.Struct, array_like=True, gc=False):
    """A probe request after the first step: the MAC is gone, a keyed hash stands in.

    ``device`` is a 64-bit HMAC of the MAC (of MAC and UTC day when ``randomized``, so a
    randomised MAC is never linked across days). ``fingerprint`` hashes the frame's
    information-element ids and vendor OUIs (0 when the sensor does not report them).
    """

    ts: int
    sensor_id: str
    store_id: str | None
    zone: str
    device: int
    randomized: bool
    rssi: int
    seq: int | None
    fingerprint: int
    offset: int


class Sale(msgspec.Struct, array_like=True, gc=False):
    """A sale or refund after validation (de-duplication by txn_id happens per site for
    footfall, per member for profiles). ``amount`` is in minor units of the store's currency."""

    ts: int
    txn_id: str
    store_id: str
    amount: int
    refund: bool
    member_id: str | None
    offset: int
    merchant_id: str = ""
    payment: str = ""
    ref_txn_id: str | None = None
    items: list[Item] = []
    points_redeemed: int = 0
    produced_ms: int | None = None  # the Kafka timestamp of its message, if the source gives it


class SiteBatch(msgspec.Struct, kw_only=True):
    site: str
    source: str
    progress_ts: int | None
    sightings: list[Sighting] = []
    sales: list[Sale] = []
    idle: bool = False


class MemberChange(msgspec.Struct, array_like=True, gc=False):
    """A validated ``members.events`` record, with any MAC already replaced by its keyed
    device id. ``kind`` is the event's ``type``: ``signup`` (``store_id``),
    ``bind_device`` / ``unbind_device`` (``device``), ``consent`` (``push``), ``profile``
    (``birthday`` as ``MM-DD``, ``tags``) or ``erase``."""

    ts: int
    member_id: str
    kind: str
    offset: int
    store_id: str | None = None
    device: int | None = None
    push: bool | None = None
    birthday: str | None = None
    tags: list[str] = []


# ---- between the member steps (flows.profiles, flows.member_visits, flows.repurchase) ----


class DeviceVisit(msgspec.Struct, array_like=True, gc=False):
    """A completed store visit of one non-randomised device (footfall -> member visits):
    the keyed device id, never a MAC. A randomised MAC is never bound to a member."""

    device: int
    store_id: str
    start_ts: int
    end_ts: int


class DeviceBinding(msgspec.Struct, array_like=True, gc=False):
    """A device's binding to a member changed (profiles -> member visits). ``bound`` False
    with the member's erase ts when the member is erased: forget the member there too."""

    device: int
    member_id: str
    ts: int
    bound: bool
    erased: bool = False


class StorePurchase(msgspec.Struct, array_like=True, gc=False):
    """A member's purchase (a sale of amount > 0 the member ledger applied) at a store
    (profiles -> repurchase rate)."""

    store_id: str
    member_id: str
    ts: int


class StoreForget(msgspec.Struct, array_like=True, gc=False):
    """The member was erased at ``ts``: the store forgets every purchase of theirs."""

    store_id: str
    member_id: str
    ts: int


class ProfileLatency(msgspec.Struct, array_like=True, gc=False):
    """The Kafka timestamps (ms) of the member's sales and refunds that the profile just
    before it includes: the Redis profile sink observes each one's sale-to-profile latency
    once that profile is written."""

    member_id: str
    produced_ms: tuple[int, ...]
