"""Member profiles through `storepulse run` (real Kafka, real Redis): a simulated month of
POS transactions with every messy case (refunds with and without their sale, partial and
split refunds, zero-amount sales, repeats) and member events (sign-ups, device bindings,
consent, profile facts, erasures); every profile in Redis equals the simulator's truth, a
batch recomputation from what was sent (``simulators.profile_truth``), and an erased
member's data from before the erasure is nowhere in Redis."""

from __future__ import annotations

import json

import msgspec
import pytest

from connectors.privacy import DeviceHasher
from connectors.schemas import MemberProfile
from simulators.mall import MallSimulator
from simulators.profile_truth import arrival_order, changes_of, member_profiles, programmes_of, sales_of
from simulators.scenario import Scenario
from state.catalog import CatalogStore
from state.profiles import ProfileStore
from tests.integration.engine_process import EngineProcess

pytestmark = pytest.mark.slow


def keyed(value: bytes, field: str) -> bytes:
    return str(json.loads(value)[field]).encode()


def test_every_profile_in_redis_equals_the_truth(engine_env, kafka_broker, redis_client, tmp_path) -> None:
    sim = MallSimulator(Scenario.load("members-month"), 7)
    topics, env = engine_env(1, STOREPULSE_MAX_EVENT_AGE_S=str(10 * 365 * 86400))
    CatalogStore(redis_client).save(sim.catalog)
    sent = sim.truth.transactions
    events = sim.truth.member_events
    # Keyed as the topic contracts say (a store's transactions stay in order on one
    # partition, so a refund never overtakes its sale; a member's events likewise).
    kafka_broker.produce(topics["transactions"], [(keyed(v, "store_id"), v) for v in sent], flush_every=500)
    kafka_broker.produce(topics["members"], [(keyed(v, "member_id"), v) for v in events], flush_every=500)
    hasher = DeviceHasher(env["STOREPULSE_MAC_HASH_KEY"].encode())
    truth = member_profiles(arrival_order(sales_of(sent), changes_of(events, hasher)), programmes_of(sim.catalog))
    assert len(truth) > 300 and sim.truth.pos_counts() and sim.truth.erasures > 5  # the messy cases are in
    assert sum(a.redeemed for p in truth.values() for a in p.loyalty) > 0  # and points earned and paid with

    def stored(member_id: str) -> MemberProfile | None:
        """The profile in Redis without its segment (learned online, not recomputed)."""
        profile = store.read(member_id)
        return None if profile is None else msgspec.structs.replace(profile, segment=None)

    store = ProfileStore(redis_client)
    engine = EngineProcess(env, tmp_path / "engine.log").start()
    try:
        engine.wait_for(
            lambda: engine.metric("storepulse_input_records_total", topic=topics["transactions"]) == len(sent),
            f"the engine to read {len(sent)} transactions",
            120,
        )
        engine.wait_for(
            lambda: engine.metric("storepulse_input_records_total", topic=topics["members"]) == len(events),
            f"the engine to read {len(events)} member events",
            120,
        )
        engine.wait_for(lambda: all(stored(m) == p for m, p in truth.items()), "every profile in Redis", 60)
        assert engine.metric("storepulse_input_rejected_total") == 0
    finally:
        engine.stop()
    # no profile for anyone who is not a member with a transaction
    assert sum(1 for _ in redis_client.scan_iter("sp:member:*:profile")) == len(truth)
