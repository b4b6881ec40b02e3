"""The member profile store (state/profiles.py) against a real redis-server and a real
one-node Redis Cluster: the hash other services read, exact round trips, replays that
never move a profile backwards, a batch in one round trip, erasure that a replay cannot
undo."""

from __future__ import annotations

import msgspec
import pytest
import redis
import redis.connection
from redis.cluster import RedisCluster

from connectors.schemas import LoyaltyAccount, MemberErased, MemberProfile
from state.profiles import Applied, ProfileStore, profile_key, tombstone_key
from state.redis import connect

DAY = 86_400_000
T = 1_763_870_400_000  # 2025-11-23 04:00 UTC, epoch ms

# Three sales (20,000 + 15,000 + 10,000 = 45,000) and one refund of 5,000; the newest sale
# 2 days before as_of_ts. avg 45,000 // 3 = 15,000. RFM: recency 2 -> 5, 3 purchases in
# 90 days -> 3, 40,000 spent in 90 days -> 3. Signed up 400 days before as_of_ts, consented
# to push, two devices bound.
ALICE = MemberProfile(
    member_id="M-1001", as_of_ts=T, sales=3, refunds=1, zero_sales=1, duplicates=2,
    gross_spend=45_000, refunded=5_000, net_spend=40_000, avg_ticket=15_000,
    first_purchase_ts=T - 40 * DAY, last_purchase_ts=T - 2 * DAY, stores=("S1", "S8"),
    spend_30d=25_000, spend_90d=40_000, purchases_30d=2, purchases_90d=3, recency_days=2,
    rfm="533", favourite_categories=("coffee", "books, rare", "茶"),
    favourite_categories_decayed=("coffee", "茶"), preferred_payment="wechat",
    member_since_ts=T - 400 * DAY, push_consent=True, birthday="03-14", tags=("vip", "tea, green"),
    devices=2, birthday_month=True, segment="regular",
    loyalty=(LoyaltyAccount(merchant_id="X1", level="gold", points=120, earned=450, redeemed=300,
                            taken_back=50, returned=20, expired=0, qualifying_spend=40_000),),
)  # fmt: skip
# Only a zero-amount sale so far: every "None if no sales" field is None, no stores; no
# signup, consent, birthday, tags or devices seen (the defaults).
BOB = MemberProfile(
    member_id="M-2002", as_of_ts=T - DAY, sales=0, refunds=0, zero_sales=1, duplicates=0,
    gross_spend=0, refunded=0, net_spend=0, avg_ticket=None, first_purchase_ts=None,
    last_purchase_ts=None, stores=(), spend_30d=0, spend_90d=0, purchases_30d=0,
    purchases_90d=0, recency_days=None, rfm=None, favourite_categories=(),
    favourite_categories_decayed=(), preferred_payment=None,
)  # fmt: skip


def later(profile: MemberProfile, days: int, **changes: object) -> MemberProfile:
    return msgspec.structs.replace(profile, as_of_ts=profile.as_of_ts + days * DAY, **changes)


class RoundTrips:
    """Counts what the client sends: one send_packed_command is one round trip."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        send = redis.connection.AbstractConnection.send_packed_command

        def counting(connection: redis.connection.AbstractConnection, *args: object, **kwargs: object) -> None:
            self.count += 1
            send(connection, *args, **kwargs)

        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)


def test_the_hash_is_the_documented_interface_and_reads_back_exactly(redis_client):
    store = ProfileStore(redis_client)
    assert store.write([ALICE, BOB]) == 2
    # what another service sees: every field, decimal ints, JSON arrays, "" for None
    assert redis_client.hgetall("sp:member:{M-1001}:profile") == {
        b"member_id": b"M-1001", b"as_of_ts": b"1763870400000", b"sales": b"3", b"refunds": b"1",
        b"zero_sales": b"1", b"duplicates": b"2", b"gross_spend": b"45000", b"refunded": b"5000",
        b"net_spend": b"40000", b"avg_ticket": b"15000", b"first_purchase_ts": b"1760414400000",
        b"last_purchase_ts": b"1763697600000", b"stores": b'["S1","S8"]', b"spend_30d": b"25000",
        b"spend_90d": b"40000", b"purchases_30d": b"2", b"purchases_90d": b"3", b"recency_days": b"2",
        b"rfm": b"533", b"favourite_categories": '["coffee","books, rare","茶"]'.encode(),
        b"favourite_categories_decayed": '["coffee","茶"]'.encode(), b"preferred_payment": b"wechat",
        b"member_since_ts": b"1729310400000", b"push_consent": b"1", b"birthday": b"03-14",
        b"tags": b'["vip","tea, green"]', b"devices": b"2", b"birthday_month": b"1", b"segment": b"regular",
        b"loyalty": b'[{"merchant_id":"X1","level":"gold","points":120,"earned":450,"redeemed":300,'
                    b'"taken_back":50,"returned":20,"expired":0,"qualifying_spend":40000}]',
    }  # fmt: skip
    bob = redis_client.hgetall(profile_key("M-2002"))
    assert bob[b"avg_ticket"] == bob[b"rfm"] == bob[b"preferred_payment"] == b""
    assert bob[b"member_since_ts"] == bob[b"birthday"] == b""
    assert bob[b"stores"] == bob[b"favourite_categories"] == bob[b"tags"] == b"[]"
    assert (bob[b"push_consent"], bob[b"devices"], bob[b"birthday_month"]) == (b"0", b"0", b"0")
    assert (bob[b"loyalty"], bob[b"segment"]) == (b"[]", b"")
    assert redis_client.ttl(profile_key("M-1001")) == -1  # no TTL: kept until erased
    assert store.read("M-1001") == ALICE
    assert store.read("M-2002") == BOB
    assert store.read("M-3003") is None


def test_a_replay_of_an_older_profile_never_moves_it_backwards(redis_client):
    store = ProfileStore(redis_client)
    newer = later(ALICE, 1, sales=4, gross_spend=50_000, net_spend=45_000, avg_ticket=12_500, stores=("S1",))
    assert store.write([newer]) == 1
    # the replay after a restart sends the older profile again: nothing changes
    assert store.write([ALICE]) == 0
    assert store.read("M-1001") == newer
    # of one member in one batch, the newest wins whatever the order
    assert store.write([later(newer, 2, sales=6), later(newer, 1, sales=5)]) == 1
    assert store.read("M-1001") == later(newer, 2, sales=6)
    # the same as_of_ts again (a replay of the newest) is written: absolute values
    assert store.write([later(newer, 2, sales=6)]) == 1
    assert store.read("M-1001") == later(newer, 2, sales=6)


def test_a_newer_profile_replaces_every_field(redis_client):
    store = ProfileStore(redis_client)
    store.write([BOB])
    redis_client.hset(profile_key("M-2002"), "field_of_an_old_version", "x")
    grown = later(BOB, 3, sales=1, gross_spend=900, net_spend=900, avg_ticket=900, stores=("S2",),
                  first_purchase_ts=BOB.as_of_ts + 3 * DAY, last_purchase_ts=BOB.as_of_ts + 3 * DAY)
    assert store.write([grown]) == 1
    assert store.read("M-2002") == grown
    assert b"field_of_an_old_version" not in redis_client.hgetall(profile_key("M-2002"))


def test_a_batch_of_1000_profiles_is_one_round_trip(redis_client, monkeypatch):
    store = ProfileStore(redis_client)
    store.write([BOB])  # loads the script (a fresh server answers NOSCRIPT once)
    batch = [msgspec.structs.replace(ALICE, member_id=f"M{n:04d}", sales=n) for n in range(1000)]
    trips = RoundTrips(monkeypatch)
    assert store.write(batch) == 1000
    assert trips.count == 1
    assert redis_client.dbsize() == 1001
    assert store.read("M0999") == batch[999]


def test_a_write_after_the_server_lost_its_scripts_still_writes(redis_client):
    store = ProfileStore(redis_client)
    store.write([BOB])
    redis_client.script_flush()  # as after a restart of the server
    assert store.write([ALICE]) == 1
    assert store.read("M-1001") == ALICE


def test_erase_deletes_the_profile_and_leaves_a_tombstone(redis_client):
    store = ProfileStore(redis_client)
    store.write([ALICE, BOB])
    assert store.erase("M-1001", T + DAY) is True
    assert store.read("M-1001") is None
    assert redis_client.get(tombstone_key("M-1001")) == b"1763956800000"  # T + DAY
    assert 35 * 86_400 - 5 <= redis_client.ttl(tombstone_key("M-1001")) <= 35 * 86_400
    assert store.erased_at("M-1001") == T + DAY
    assert store.erase("M-1001", T + DAY) is False  # the replay of the erasure: not new
    assert store.read("M-2002") == BOB and store.erased_at("M-2002") is None
    # a member with no profile yet is erased too: the tombstone guards later replays
    assert store.erase("M-3003", T) is True and redis_client.exists(profile_key("M-3003")) == 0


def test_a_replay_after_a_restart_does_not_bring_an_erased_member_back(redis_client):
    store = ProfileStore(redis_client)
    assert store.write([ALICE]) == 1
    assert store.erase("M-1001", T + DAY) is True
    # the restart replays what came before the erasure: ALICE (as_of T) and one as of the
    # erasure's own ts (<= is "before"); neither is written
    assert store.write([ALICE, later(ALICE, 1)]) == 0
    assert store.read("M-1001") is None and store.erased_at("M-1001") == T + DAY
    # the member comes back: a profile newer than the erasure is written, the tombstone goes
    back = later(ALICE, 2, sales=1)
    assert store.write([back]) == 1
    assert store.read("M-1001") == back and store.erased_at("M-1001") is None
    # a stale erasure (older than the stored profile, replayed) changes nothing
    assert store.erase("M-1001", T + DAY) is False
    assert store.read("M-1001") == back and store.erased_at("M-1001") is None


def test_a_batch_applies_each_members_records_in_order(redis_client):
    store = ProfileStore(redis_client)
    erase = MemberErased(member_id="M-1001", ts=T + DAY)
    # ALICE, then erased, then ALICE again as of before the erasure (a replay): erased
    assert store.apply([ALICE, BOB, erase, ALICE]) == Applied(written=2, erased=1)
    assert store.read("M-1001") is None and store.read("M-2002") == BOB
    # erased, then a newer profile of the same member in the same batch: the profile wins
    back = later(ALICE, 3)
    erase_bob = MemberErased(member_id="M-2002", ts=T)
    assert store.apply([erase, erase_bob, back, later(BOB, 1)]) == Applied(written=1, erased=1)
    assert store.read("M-1001") == back and store.erased_at("M-1001") is None
    assert store.read("M-2002") is None and store.erased_at("M-2002") == T  # BOB's is not newer
    # a newer profile, then an erasure after it: erased
    assert store.apply([later(back, 1), MemberErased(member_id="M-1001", ts=T + 5 * DAY)]) == (1, 1)
    assert store.read("M-1001") is None and store.erased_at("M-1001") == T + 5 * DAY
    with pytest.raises(TypeError, match="unexpected str"):
        store.apply(["not a record"])  # type: ignore[list-item]


def test_new_fields_read_as_their_defaults_from_an_older_writers_hash(redis_client):
    store = ProfileStore(redis_client)
    store.write([ALICE])
    redis_client.hdel(profile_key("M-1001"), "member_since_ts", "push_consent", "birthday", "tags", "devices")
    assert store.read("M-1001") == msgspec.structs.replace(
        ALICE, member_since_ts=None, push_consent=False, birthday=None, tags=(), devices=0
    )


def test_a_key_that_is_not_a_profile_is_an_error_not_a_guess(redis_client):
    store = ProfileStore(redis_client)
    redis_client.hset(profile_key("M-1001"), mapping={"member_id": "M-1001", "as_of_ts": "1"})
    with pytest.raises(msgspec.ValidationError):
        store.read("M-1001")
    store.write([ALICE])
    redis_client.hset(profile_key("M-1001"), "push_consent", "true")  # not "1"/"0": not guessed
    with pytest.raises(msgspec.ValidationError, match="push_consent"):
        store.read("M-1001")
    redis_client.set(profile_key("M-2002"), "a string")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        store.write([BOB])


def test_profiles_on_a_redis_cluster(redis_cluster_server):
    client = connect(redis_cluster_server.url)
    assert isinstance(client, RedisCluster)
    client.flushall()
    client.script_flush()  # the NOSCRIPT path through a cluster pipeline
    store = ProfileStore(client)
    members = [msgspec.structs.replace(ALICE, member_id=f"M{n}") for n in range(50)]
    assert len({client.keyslot(profile_key(p.member_id)) for p in members}) > 1  # across slots
    assert store.write([*members, BOB]) == 51
    assert store.write([msgspec.structs.replace(ALICE, member_id="M7", as_of_ts=T - DAY)]) == 0
    assert [store.read(p.member_id) for p in members] == members
    assert store.read("M-2002") == BOB
    assert store.erase("M7", T + DAY) and store.read("M7") is None
    assert client.keyslot(tombstone_key("M7")) == client.keyslot(profile_key("M7"))
    assert store.write([msgspec.structs.replace(ALICE, member_id="M7")]) == 0  # the replay
    erasures = [MemberErased(member_id=p.member_id, ts=T + DAY) for p in members]
    assert store.apply([*erasures, later(members[3], 2)]) == Applied(written=1, erased=49)
    assert store.read("M3") == later(members[3], 2) and store.erased_at("M3") is None
    assert store.read("M4") is None and store.erased_at("M4") == T + DAY
    client.close()
