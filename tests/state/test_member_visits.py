"""state.member_visits against a real redis-server: the key and its encoding, a write
refused when older than the stored one or than the member's erasure tombstone, an erasure
deleting the key, replays changing nothing, a lost script reloaded."""

from __future__ import annotations

import msgspec
import pytest
from redis.cluster import RedisCluster

from connectors.schemas import MemberVisits, VisitsErased
from state.member_visits import MemberVisitsStore, visits_key
from state.profiles import ProfileStore
from state.redis import connect

T0 = 1_763_870_400_000
HOUR = 3_600_000
DAY = 86_400_000

ALICE = MemberVisits(member_id="ALICE", as_of_ts=T0 + HOUR, stores_visited=("S1", "S,2"), last_seen_ts=T0 + HOUR,
                     last_seen_store="S,2")  # fmt: skip


def later(record: MemberVisits, hours: int, **changes: object) -> MemberVisits:
    ts = record.as_of_ts + hours * HOUR
    return msgspec.structs.replace(record, as_of_ts=ts, last_seen_ts=ts, **changes)


def test_the_key_and_its_fields(redis_client) -> None:
    store = MemberVisitsStore(redis_client)
    assert store.write([ALICE]) == (1, 0)
    assert redis_client.hgetall("sp:member:{ALICE}:visits") == {
        b"member_id": b"ALICE",
        b"as_of_ts": b"1763874000000",
        b"stores_visited": b'["S1","S,2"]',
        b"last_seen_ts": b"1763874000000",
        b"last_seen_store": b"S,2",
    }
    assert visits_key("ALICE") == "sp:member:{ALICE}:visits"
    assert store.read("ALICE") == ALICE and store.read("BOB") is None


def test_an_older_write_is_refused_an_equal_or_newer_one_replaces(redis_client) -> None:
    store = MemberVisitsStore(redis_client)
    store.write([ALICE])
    older = later(ALICE, -1, stores_visited=("S1",), last_seen_store="S1")
    assert store.write([older]) == (0, 0)
    assert store.read("ALICE") == ALICE
    same_ts = msgspec.structs.replace(ALICE, stores_visited=("S0", "S1", "S,2"))  # a late store
    assert store.write([same_ts]) == (1, 0) and store.read("ALICE") == same_ts
    newer = later(ALICE, 1, stores_visited=("S1",), last_seen_store="S1")
    assert store.write([newer]) == (1, 0) and store.read("ALICE") == newer
    # the replay of the whole sequence ends where it was
    store.write([ALICE, older, same_ts, newer])
    assert store.read("ALICE") == newer


def test_a_write_not_newer_than_the_erasure_tombstone_is_refused(redis_client) -> None:
    store = MemberVisitsStore(redis_client)
    profiles = ProfileStore(redis_client)
    erase_ts = ALICE.as_of_ts + DAY
    profiles.erase("ALICE", erase_ts)  # the profile sink writes the tombstone
    assert store.write([ALICE]) == (0, 0)  # computed before the erasure (a replay)
    at_erase = later(ALICE, 24)  # as_of_ts == the erase ts: still refused
    assert at_erase.as_of_ts == erase_ts and store.write([at_erase]) == (0, 0)
    assert store.read("ALICE") is None
    back = later(ALICE, 25)  # the member came back after the erasure
    assert store.write([back]) == (1, 0) and store.read("ALICE") == back
    assert profiles.erased_at("ALICE") == erase_ts  # the tombstone is the profile store's


def test_an_erasure_deletes_the_visits(redis_client) -> None:
    store = MemberVisitsStore(redis_client)
    bob = msgspec.structs.replace(ALICE, member_id="BOB")
    store.write([ALICE, bob])
    assert store.write([VisitsErased(member_id="ALICE", ts=T0 + DAY)]) == (0, 1)
    assert store.read("ALICE") is None and store.read("BOB") == bob
    assert store.write([VisitsErased(member_id="ALICE", ts=T0 + DAY)]) == (0, 0)  # a replay: nothing left
    # in one batch, in order: written, erased, the visits left after the erasure written
    after = later(ALICE, 30, stores_visited=("S9",), last_seen_store="S9")
    assert store.write([ALICE, VisitsErased(member_id="ALICE", ts=T0 + DAY), after]) == (2, 1)
    assert store.read("ALICE") == after


def test_a_lost_script_is_loaded_again(redis_client) -> None:
    store = MemberVisitsStore(redis_client)
    store.write([ALICE])
    redis_client.script_flush()
    newer = later(ALICE, 1)
    assert store.write([newer]) == (1, 0) and store.read("ALICE") == newer


def test_a_hash_that_is_not_a_record_is_refused(redis_client) -> None:
    redis_client.hset(visits_key("ALICE"), mapping={"member_id": "ALICE", "as_of_ts": "1"})
    with pytest.raises(msgspec.ValidationError):
        MemberVisitsStore(redis_client).read("ALICE")
    with pytest.raises(TypeError):
        MemberVisitsStore(redis_client).write(["nope"])  # type: ignore[list-item]


def test_member_visits_on_a_redis_cluster(redis_cluster_server) -> None:
    client = connect(redis_cluster_server.url)
    assert isinstance(client, RedisCluster)
    client.flushall()
    client.script_flush()  # the NOSCRIPT path through a cluster pipeline
    store = MemberVisitsStore(client)
    records = [msgspec.structs.replace(ALICE, member_id=f"M{n}") for n in range(30)]
    assert len({client.keyslot(visits_key(r.member_id)) for r in records}) > 1  # across slots
    erasures = [VisitsErased(member_id=r.member_id, ts=T0 + DAY) for r in records[:10]]
    assert store.write(records) == (30, 0)
    assert store.write([*erasures, later(records[3], 30)]) == (1, 10)
    assert store.read("M3") == later(records[3], 30) and store.read("M4") is None
    assert [store.read(r.member_id) for r in records[10:]] == records[10:]
    client.close()
