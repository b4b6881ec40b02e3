"""Store health in Redis: each store's newest ``StoreHealth`` and the ranking of all stores.

Writes ``connectors.schemas.StoreHealth`` records (``flows.sales_watch`` makes them, once an
event-time hour per store) for the platform, which picks its quality merchants from the top
of the ranking and warns the declining ones at the bottom. Idempotent and replay-safe: a
record replaces the stored one only if its ``as_of_ts`` is not older, so the replay after a
restart never moves a store back to an older hour, and its score in the ranking follows
only the records that were written.

Key layout (the cross-service interface):

``sp:store:{<store_id>}:health`` (hash, no TTL: one per store, a small fixed set)
    Fields ``store_id``, ``merchant_id``, ``as_of_ts`` (epoch ms UTC: the end of the hour
    the record is of), ``score`` (0-100), ``sales_index``, ``footfall_index``,
    ``conversion_index`` (this week against the store's normal, 1 = normal) and
    ``repurchase_rate`` (0-1), floats with ``repr``, the empty string when not known yet;
    every field always present: the encoding of every serving key (``state.hashes``).
    Replaced whole by the replace-if-newer script of ``state.hashes`` (``as_of_ts`` >= the
    stored one; an equal one is rewritten, so a replay ends where it was).

``sp:stores:health`` (sorted set, no TTL)
    Member: the store id; score: its health score, as in its hash. Best first is
    ``ZREVRANGE sp:stores:health 0 N-1 WITHSCORES``, worst first ``ZRANGE ... 0 N-1``.
    ``health_of``, ``top`` and ``bottom`` give ranks in competition order (1 = best; stores
    of equal score share a rank, the next rank skips: 1, 2, 2, 4), which is
    ``1 + ZCOUNT sp:stores:health (<score> +inf``; ``ZREVRANK`` would instead order a tie by
    store id, which means nothing.

Writing takes two round trips (two non-transactional pipelines): the hashes by script
first, then ``ZADD`` of the stores whose hash was written. One script over both keys would
be atomic, but on a Redis Cluster a script's keys must share a slot: the hash would need the
ranking's hash tag, putting every store's health on one node and out of the
``sp:store:{<store_id>}:*`` slot its other keys share (``state.store_members``,
``state.footfall``). Two steps cost a short window in which a store's hash is newer than its
score in the ranking; a crash inside it is repaired by the replay, which rewrites the hash
(an equal ``as_of_ts`` is written) and so adds the score again. Loading a catalog
(``storepulse catalog load``) forgets the stores it no longer has (``prune``).

>>> store_health_key("S1"), RANKING_KEY
('sp:store:{S1}:health', 'sp:stores:health')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, cast

from connectors.schemas import StoreHealth
from state.hashes import HashCodec, text, write_newest
from state.redis import Client

RANKING_KEY = "sp:stores:health"
_CODEC = HashCodec(StoreHealth)


def store_health_key(store_id: str) -> str:
    """The key of a store's health hash."""
    return f"sp:store:{{{store_id}}}:health"


class Ranked(NamedTuple):
    """A store's place in the ranking: ``rank`` 1 is the best of ``out_of`` stores."""

    store_id: str
    score: float
    rank: int
    out_of: int


class RankedHealth(NamedTuple):
    """A store's newest health record, its rank (1 = best; ties share one) and the number
    of stores ranked."""

    health: StoreHealth
    rank: int
    out_of: int


class StoreHealthStore:
    """Writes and reads the keys of the module docstring."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def write(self, records: Sequence[StoreHealth]) -> list[StoreHealth]:
        """Write a batch (two pipelines, see the module docstring); of several records of
        one store only the newest is sent (of equal ``as_of_ts``, the last). Returns the
        records written (not those older than what Redis holds). Raises redis errors; safe
        to retry whole."""
        written = write_newest(self.client, _CODEC, records, lambda r: store_health_key(r.store_id))
        if written:
            self.client.zadd(RANKING_KEY, {record.store_id: record.score for record in written})
        return written

    def read(self, store_id: str) -> StoreHealth | None:
        """The store's record, or None if there is none."""
        raw = cast(dict[bytes, bytes], self.client.hgetall(store_health_key(store_id)))
        return _CODEC.read(raw) if raw else None

    def forget(self, store_id: str) -> None:
        """Remove a store (closed, left the platform) from Redis and the ranking."""
        self.client.delete(store_health_key(store_id))
        self.client.zrem(RANKING_KEY, store_id)


def prune(client: Client, stores: set[str]) -> list[str]:
    """Forget every ranked store that is not in ``stores`` (the catalog's, when a new
    catalog is loaded: a store that left stays out of the ranking); the ids forgotten."""
    ranked = {text(m) for m in cast(list[bytes], client.zrange(RANKING_KEY, 0, -1))}
    gone = sorted(ranked - stores)
    health = StoreHealthStore(client)
    for store_id in gone:
        health.forget(store_id)
    return gone


def health_of(client: Client, store_id: str) -> RankedHealth | None:
    """The store's newest health and its rank, or None if it has none (or is not ranked).
    Two round trips; not atomic with writes, like every read of a live ranking."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(store_health_key(store_id))
    pipe.zscore(RANKING_KEY, store_id)
    pipe.zcard(RANKING_KEY)
    raw, score, count = pipe.execute()
    if not raw or score is None:
        return None
    return RankedHealth(_CODEC.read(raw), _ranks(client, [score])[score], int(count))


def top(client: Client, n: int) -> list[Ranked]:
    """The ``n`` best stores, best first (equal scores in ``ZREVRANGE`` order)."""
    return _ranked(client, n, best_first=True)


def bottom(client: Client, n: int) -> list[Ranked]:
    """The ``n`` worst stores, worst first (equal scores in ``ZRANGE`` order)."""
    return _ranked(client, n, best_first=False)


def _ranked(client: Client, n: int, *, best_first: bool) -> list[Ranked]:
    if n <= 0:
        return []
    pipe = client.pipeline(transaction=False)
    pipe.zrange(RANKING_KEY, 0, n - 1, desc=best_first, withscores=True)
    pipe.zcard(RANKING_KEY)
    entries, count = cast(tuple[list[tuple[bytes, float]], int], tuple(pipe.execute()))
    ranks = _ranks(client, [score for _, score in entries])
    return [Ranked(text(member), score, ranks[score], int(count)) for member, score in entries]


def _ranks(client: Client, scores: list[float]) -> dict[float, int]:
    """The competition rank of each score: 1 + the stores with a higher one (one round trip)."""
    distinct = sorted(set(scores))
    pipe = client.pipeline(transaction=False)
    for score in distinct:
        pipe.zcount(RANKING_KEY, f"({score!r}", "+inf")  # "(": exclusive
    return {score: int(above) + 1 for score, above in zip(distinct, pipe.execute(), strict=True)}
