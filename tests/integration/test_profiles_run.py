"""Member profiles through `storepulse run` (real Kafka, real Redis): a simulated month of
POS transactions with every messy case (refunds with and without their sale, partial and
split refunds, zero-amount sales, repeats); every profile in Redis equals the simulator's
truth, a batch recomputation from the transactions sent (``simulators.profile_truth``)."""

from __future__ import annotations

import pytest

from simulators.mall import MallSimulator
from simulators.profile_truth import member_profiles, sales_of
from simulators.scenario import Scenario
from state.catalog import CatalogStore
from state.profiles import ProfileStore
from tests.integration.engine_process import EngineProcess

pytestmark = pytest.mark.slow


def test_every_profile_in_redis_equals_the_truth(engine_env, kafka_broker, redis_client, tmp_path) -> None:
    sim = MallSimulator(Scenario.load("members-month"), 7)
    topics, env = engine_env(1, STOREPULSE_MAX_EVENT_AGE_S=str(10 * 365 * 86400))
    CatalogStore(redis_client).save(sim.catalog)
    sent = sim.truth.transactions
    kafka_broker.produce(topics["transactions"], [(None, v) for v in sent], flush_every=500)
    truth = member_profiles(sales_of(sent))
    assert len(truth) > 300 and sim.truth.pos_counts()  # a month of members, messy cases included

    store = ProfileStore(redis_client)
    engine = EngineProcess(env, tmp_path / "engine.log").start()
    try:
        engine.wait_for(
            lambda: engine.metric("storepulse_input_records_total", topic=topics["transactions"]) == len(sent),
            f"the engine to read {len(sent)} transactions",
            120,
        )
        engine.wait_for(lambda: all(store.read(m) == p for m, p in truth.items()), "every profile in Redis", 60)
        assert engine.metric("storepulse_input_rejected_total") == 0
    finally:
        engine.stop()
    # no profile for anyone who is not a member with a transaction
    assert sum(1 for _ in redis_client.scan_iter("sp:member:*:profile")) == len(truth)
