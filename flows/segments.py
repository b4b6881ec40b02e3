"""Spending segments: each member profile gets a named segment learned online (river).

Reads ``MemberProfile | MemberErased`` (and passes anything else through): the output of
``update_profiles``. Writes the same items in the same order, every ``MemberProfile`` with
``segment`` set (``msgspec.structs.replace``), everything else unchanged.

Segments (``SpendingSegmenter``), from the profile alone:

- ``None``: no purchases (``sales == 0``: ``recency_days`` is None).
- ``"lapsed"``: no purchase in the 90-day window (``recency_days >= 90``, so
  ``purchases_90d == 0``).
- otherwise (active) by the member's *value* ``v = log1p(max(spend_90d, 0)) +
  log1p(purchases_90d)`` (90-day net spend times visits, on a log scale) against two
  learned cutoffs: ``"vip"`` if ``v >=`` the 90th percentile of the values of active
  profiles learned so far, ``"regular"`` if ``v >=`` their median, else ``"occasional"``.

The percentiles are river ``stats.Quantile`` (P², five markers each, deterministic). The
names never relabel: a tier is a rank against percentiles of one scalar, not a cluster
index. To keep a member from flapping, the cutoffs in force are frozen for a UTC day of
event time (they are re-read from the estimates at the first profile of a newer day than
any seen), so within a day a member's segment changes only when its own profile does;
before ``warmup`` profiles are learned they are fixed priors from the RFM thresholds.

Predict, then learn (score before learning): a profile is segmented against the members
learned before its day began, so its segment never depends on whether (or in which order
with it) it is itself learned. A member emits a profile per batch it buys in, so a
frequent buyer would outweigh the others: a profile is learned with probability
``1 / purchases_90d``, decided by a hash of ``(member_id, as_of_ts)``, so each active
member counts about once per 90 days, with no per-member state (nothing to erase:
``MemberErased`` passes through; the model holds only the percentile markers, a count and
the cutoffs).

State: one model for the whole stream. Every item is routed to the one key ``"all"``
(profiles are a small stream: one per member per batch), so the step runs on one worker.
Guarantee: the model is exactly-once through bytewax snapshots (the pickled
``SpendingSegmenter``); it is deterministic in its input order, so a resumed run gives the
segments an uninterrupted run gives (with several workers, profiles from different workers
may interleave differently at the key after a restart, and P² depends on order).
"""

from __future__ import annotations

import hashlib
import math
import pickle
from typing import Any, NamedTuple

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Stream
from bytewax.operators import StatefulBatchLogic
from river import stats

from connectors.schemas import MemberProfile

DAY_MS = 86_400_000
ACTIVE_DAYS = 90  # the profile's long window: spend_90d and purchases_90d
RECENCY_CAP_DAYS = 365
ROUTE_KEY = "all"

Features = dict[str, float]


class Cutoffs(NamedTuple):
    """Values at or above which an active member is ``regular`` and ``vip``."""

    regular: float
    vip: float


def value(spend_90d: float, purchases_90d: float) -> float:
    """A member's value: ``log1p(max(spend_90d, 0)) + log1p(purchases_90d)``.

    >>> round(value(5_000, 2), 4), value(-300, 0)
    (9.616, 0.0)
    """
    return math.log1p(max(spend_90d, 0)) + math.log1p(purchases_90d)


# Before the percentiles are learned: the RFM thresholds of docs/member-profiles.md
# (M2 and F2: 5,000 in 2 purchases; M4 and F4: 50,000 in 5).
PRIOR = Cutoffs(regular=value(5_000, 2), vip=value(50_000, 5))


def _draw(member_id: str, as_of_ts: int) -> float:
    """A uniform number in [0, 1) fixed by the profile (not by Python's salted hash)."""
    digest = hashlib.blake2b(f"{member_id}/{as_of_ts}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def features(profile: MemberProfile) -> Features | None:
    """The segmenter's input, or None for a member with no purchases (no segment).

    ``spend``: ``log1p(max(spend_90d, 0))``; ``purchases``: ``log1p(purchases_90d)``;
    ``recency_days`` capped at 365; ``day``: the UTC day of ``as_of_ts``; ``draw``: a
    uniform number fixed by ``(member_id, as_of_ts)``, which decides whether it is learned.
    """
    if profile.recency_days is None:
        return None
    return {
        "spend": math.log1p(max(profile.spend_90d, 0)),
        "purchases": math.log1p(profile.purchases_90d),
        "recency_days": float(min(profile.recency_days, RECENCY_CAP_DAYS)),
        "day": float(profile.as_of_ts // DAY_MS),
        "draw": _draw(profile.member_id, profile.as_of_ts),
    }


class SpendingSegmenter:
    """A member's spending segment, learned online: lapsed, occasional, regular or vip.

    ``learn_one(x)`` and ``predict_one(x)`` take ``features(profile)``. Active members (a
    purchase in 90 days) are ranked by ``spend + purchases`` against cutoffs at the
    ``regular_q`` and ``vip_q`` percentiles of the active values learned (``stats.Quantile``),
    frozen per UTC day of event time; ``PRIOR`` until ``warmup`` values are learned. A
    profile is learned with probability ``1 / purchases_90d`` (its ``draw``), so a frequent
    buyer's many profiles count about as one member.

    >>> seg = SpendingSegmenter()
    >>> def x(spend, purchases, day, recency=0, draw=0.0):
    ...     return {"spend": math.log1p(spend), "purchases": math.log1p(purchases),
    ...             "recency_days": recency, "day": day, "draw": draw}
    >>> seg.predict_one(x(60_000, 6, day=0))  # the prior: >= 50,000 in 5 purchases
    'vip'
    >>> for k in range(1, 101):  # on day 0, 100 members spend 100, 200, ..., 10,000 once
    ...     seg.learn_one(x(100 * k, 1, day=0))
    >>> [seg.predict_one(x(s, 1, day=0)) for s in (3_000, 6_000, 20_000)]  # the prior still
    ['occasional', 'occasional', 'regular']
    >>> [seg.predict_one(x(s, 1, day=1)) for s in (3_000, 6_000, 20_000)]  # learned, from day 1
    ['occasional', 'regular', 'vip']
    >>> seg.predict_one(x(60_000, 6, day=1, recency=200))
    'lapsed'
    """

    def __init__(self, *, regular_q: float = 0.5, vip_q: float = 0.9, warmup: int = 100, prior: Cutoffs = PRIOR):
        if not 0 < regular_q < vip_q < 1:
            raise ValueError(f"need 0 < regular_q < vip_q < 1, got {regular_q} and {vip_q}")
        self.regular = stats.Quantile(regular_q)
        self.vip = stats.Quantile(vip_q)
        self.warmup = warmup
        self.learned = 0  # active values learned
        self.cutoffs = prior  # in force for self.day
        self.day: int | None = None  # the newest UTC day of event time seen

    def _cutoffs_on(self, day: int) -> Cutoffs:
        """The cutoffs in force on ``day``: re-read from the estimates on a newer day."""
        if self.day is not None and day <= self.day:
            return self.cutoffs
        if self.learned < max(self.warmup, 1):
            return self.cutoffs
        regular, vip = self.regular.get(), self.vip.get()
        assert regular is not None and vip is not None  # learned > 0
        return Cutoffs(regular, max(regular, vip))

    def predict_one(self, x: Features) -> str:
        if x["recency_days"] >= ACTIVE_DAYS:
            return "lapsed"
        cutoffs = self._cutoffs_on(int(x["day"]))
        v = x["spend"] + x["purchases"]
        if v >= cutoffs.vip:
            return "vip"
        if v >= cutoffs.regular:
            return "regular"
        return "occasional"

    def learn_one(self, x: Features) -> None:
        day = int(x["day"])
        self.cutoffs = self._cutoffs_on(day)
        self.day = day if self.day is None else max(self.day, day)
        if x["recency_days"] >= ACTIVE_DAYS:
            return  # lapsed: not in the active population
        purchases = math.expm1(x["purchases"])
        if x["draw"] >= 1.0 / max(1.0, purchases):
            return  # one of a frequent buyer's many profiles: skipped
        v = x["spend"] + x["purchases"]
        self.regular.update(v)
        self.vip.update(v)
        self.learned += 1

    def __repr__(self) -> str:
        return f"SpendingSegmenter(learned={self.learned}, day={self.day}, cutoffs={self.cutoffs})"


class SegmentLogic(StatefulBatchLogic[Any, Any, bytes]):
    """bytewax glue: one ``SpendingSegmenter`` for the whole stream, snapshotted pickled.
    Each profile is segmented, then learned, one at a time in arrival order (so the
    segments do not depend on how items are batched)."""

    def __init__(self, model: SpendingSegmenter) -> None:
        self.model = model

    def on_batch(self, values: list[Any]) -> tuple[list[Any], bool]:
        model = self.model
        out: list[Any] = []
        for item in values:
            if isinstance(item, MemberProfile):
                x = features(item)
                segment = None
                if x is not None:
                    segment = model.predict_one(x)
                    model.learn_one(x)
                item = msgspec.structs.replace(item, segment=segment)
            out.append(item)
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.model, protocol=pickle.HIGHEST_PROTOCOL)


def build_segment_logic(resume: bytes | None) -> SegmentLogic:
    """The ``stateful_batch`` builder: a new model, or the one resumed from its snapshot."""
    return SegmentLogic(SpendingSegmenter() if resume is None else pickle.loads(resume))


def assign_segments(step_id: str, profiles: Stream[Any]) -> Stream[Any]:
    """Set ``segment`` on every ``MemberProfile`` of ``profiles`` (``MemberProfile |
    MemberErased | ...``); pass every other item through unchanged, in order.

    ``step_id`` names the stateful step: the recovery key of the model. Every item goes to
    the one key ``"all"``.
    """
    keyed = op.key_on(f"route_{step_id}", profiles, lambda _: ROUTE_KEY)  # ("all", item)
    segmented = op.stateful_batch(step_id, keyed, build_segment_logic)  # ("all", item with segment)
    return op.key_rm(f"unkey_{step_id}", segmented)
