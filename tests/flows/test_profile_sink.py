"""RedisProfileSink of flows/redis_sinks.py through a real redis-server: writes profiles and
applies erasures in item order per member, ignores other items, counts what it did, and
waits out an outage as the footfall sink does (the shared retry loop itself is tested in
test_outputs.py)."""

from __future__ import annotations

import msgspec
import pytest
import redis

from connectors.schemas import FootfallMinute, MemberErased
from flows.redis_sinks import RedisFootfallSink, RedisProfileSink
from state.profiles import ProfileStore, profile_key
from state.redis import Backoff
from storepulse.health import Readiness
from tests.fixtures.redis import RedisServer
from tests.flows.test_outputs import sample, write_through_an_outage
from tests.state.test_profiles import ALICE, BOB, DAY, later

MINUTE = FootfallMinute(scope="store", scope_id="S1", mall_id="M1", minute_ts=0, devices=1,
                        devices_15m=1, devices_1h=1)


def test_profiles_are_written_and_counted_other_items_ignored(redis_server, redis_client):
    readiness = Readiness()
    part = RedisProfileSink(redis_server.url, readiness=readiness).build("write_profiles_redis", 0, 1)
    assert readiness.report().ready and readiness.is_up("redis-profiles[0]")
    updates = sample("storepulse_profile_updates_total")

    part.write_batch([ALICE, MINUTE, "not a profile", BOB])
    store = ProfileStore(redis_client)
    assert store.read(ALICE.member_id) == ALICE and store.read(BOB.member_id) == BOB
    assert redis_client.keys("sp:footfall:*") == []  # the minute is not this sink's
    assert sample("storepulse_profile_updates_total") - updates == 2

    # the replay of an older profile writes nothing and counts nothing
    older = msgspec.structs.replace(ALICE, as_of_ts=ALICE.as_of_ts - DAY, sales=1)
    part.write_batch([older])
    assert store.read(ALICE.member_id) == ALICE
    assert sample("storepulse_profile_updates_total") - updates == 2
    part.write_batch([MINUTE])  # nothing for this sink: no write
    assert sample("storepulse_profile_updates_total") - updates == 2
    part.close()


def test_erasures_are_applied_in_order_with_the_profiles_and_counted(redis_server, redis_client):
    part = RedisProfileSink(redis_server.url, readiness=Readiness()).build("write_profiles_redis", 0, 1)
    store = ProfileStore(redis_client)
    updates, erased = sample("storepulse_profile_updates_total"), sample("storepulse_members_erased_total")
    erase_alice = MemberErased(member_id=ALICE.member_id, ts=ALICE.as_of_ts + DAY)
    back = later(ALICE, 2, sales=1)

    # one batch: ALICE written, then erased, then her replayed old profile (not written),
    # BOB written; then a second batch in which she comes back after the erasure
    part.write_batch([ALICE, BOB, MINUTE, erase_alice, ALICE])
    assert store.read(ALICE.member_id) is None and store.read(BOB.member_id) == BOB
    assert store.erased_at(ALICE.member_id) == ALICE.as_of_ts + DAY
    assert sample("storepulse_profile_updates_total") - updates == 2  # ALICE once, BOB
    assert sample("storepulse_members_erased_total") - erased == 1

    # the restart replays the batch: nothing changes, nothing more is erased; her profile
    # newer than the erasure, in the same batch after the erasure, is written
    part.write_batch([ALICE, BOB, erase_alice, ALICE, back])
    assert store.read(ALICE.member_id) == back and store.erased_at(ALICE.member_id) is None
    assert sample("storepulse_profile_updates_total") - updates == 4  # BOB again (same as_of), back
    assert sample("storepulse_members_erased_total") - erased == 1

    part.write_batch([MemberErased(member_id=BOB.member_id, ts=BOB.as_of_ts)])  # erasure alone
    assert store.read(BOB.member_id) is None
    assert sample("storepulse_members_erased_total") - erased == 2
    part.close()


def test_its_readiness_is_its_own_next_to_the_footfall_sink(redis_server, redis_client):
    readiness = Readiness()
    footfall = RedisFootfallSink(redis_server.url, readiness=readiness).build("write_footfall_redis", 0, 1)
    profiles = RedisProfileSink(redis_server.url, readiness=readiness).build("write_profiles_redis", 0, 1)
    redis_client.set(profile_key(ALICE.member_id), "not a hash")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):  # stops the dataflow
        profiles.write_batch([ALICE])
    footfall.write_batch([MINUTE])  # the footfall sink's success does not hide the failure
    assert readiness.report().failing().keys() == {"redis-profiles[0]"}
    footfall.close()
    profiles.close()


def test_a_real_redis_stopped_mid_run_holds_the_profiles_until_it_is_back(make_redis_server):
    server: RedisServer = make_redis_server()
    readiness = Readiness()
    part = RedisProfileSink(server.url, backoff=Backoff(base_s=0.01, cap_s=0.1), readiness=readiness).build(
        "write_profiles_redis", 0, 1
    )
    part.write_batch([BOB])
    write_through_an_outage(part, server, ALICE, readiness, "redis-profiles[0]")
    assert ProfileStore(redis.Redis.from_url(server.url)).read(ALICE.member_id) == ALICE
    part.close()


def test_the_process_is_not_ready_until_every_redis_sink_is_built(redis_server) -> None:
    # Two sinks: building the profile sink first must not make the process look ready.
    from flows.redis_sinks import RedisFootfallSink, RedisProfileSink
    from storepulse.health import Readiness

    readiness = Readiness()
    footfall = RedisFootfallSink(redis_server.url, readiness=readiness)
    profiles = RedisProfileSink(redis_server.url, readiness=readiness)
    profiles.build("write_profiles", 0, 1)
    assert not readiness.report().ready
    footfall.build("write_footfall", 0, 1)
    assert readiness.report().ready
