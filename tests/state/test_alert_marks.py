"""state/alert_marks.py against a real Redis and a one-node Redis Cluster: what is marked
reads back per channel, the key layout and its 90-day expiry, and marking again."""

from __future__ import annotations

import pytest
from redis.cluster import RedisCluster

from state.alert_marks import AlertMarks, alert_mark_key
from state.redis import connect

FIRING = "msg_96e83037a2f78db1_firing"
RESOLVED = "msg_96e83037a2f78db1_resolved"
T_MS = 1_767_229_200_000
NINETY_DAYS_S = 90 * 24 * 3600  # 7 776 000


def test_marks_read_back_per_channel_with_their_time(redis_client) -> None:
    marks = AlertMarks(redis_client)
    assert marks.delivered([FIRING, RESOLVED]) == {FIRING: frozenset(), RESOLVED: frozenset()}
    assert marks.mark([(FIRING, "kafka"), (FIRING, "webhook"), (RESOLVED, "kafka")], T_MS) == 3
    assert marks.delivered([FIRING, RESOLVED, FIRING]) == {
        FIRING: frozenset({"kafka", "webhook"}),
        RESOLVED: frozenset({"kafka"}),
    }
    # The layout other services read: one hash per message id, a field per channel, ms as text.
    assert redis_client.hgetall("sp:alert:{msg_96e83037a2f78db1_firing}") == {
        b"kafka": b"1767229200000",
        b"webhook": b"1767229200000",
    }
    ttl = redis_client.ttl(alert_mark_key(RESOLVED))
    assert NINETY_DAYS_S - 5 <= ttl <= NINETY_DAYS_S


def test_marking_again_moves_the_time_and_expiry_forward_only(redis_client) -> None:
    marks = AlertMarks(redis_client, ttl_s=100)
    marks.mark([(FIRING, "kafka")], T_MS)
    redis_client.expire(alert_mark_key(FIRING), 10)  # as if 90 s had passed
    marks.mark([(FIRING, "kafka")], T_MS + 90_000)  # a replay's mark
    assert redis_client.hgetall(alert_mark_key(FIRING)) == {b"kafka": b"1767229290000"}
    assert 95 <= redis_client.ttl(alert_mark_key(FIRING)) <= 100
    assert marks.mark([], T_MS) == 0 and marks.delivered([]) == {}


def test_bad_ids_and_channels_are_refused(redis_client) -> None:
    marks = AlertMarks(redis_client)
    with pytest.raises(ValueError, match="channel must be one of"):
        marks.mark([(FIRING, "email")], T_MS)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="without braces"):
        alert_mark_key("msg_{x}")
    with pytest.raises(ValueError, match="ttl_s"):
        AlertMarks(redis_client, ttl_s=0)


def test_marks_on_a_redis_cluster(redis_cluster_server) -> None:
    client = connect(redis_cluster_server.url)
    assert isinstance(client, RedisCluster)
    client.flushall()
    ids = [f"msg_{n:016x}_firing" for n in range(40)]
    assert len({client.keyslot(alert_mark_key(i)) for i in ids}) > 1  # across slots
    marks = AlertMarks(client)
    assert marks.mark([(i, "kafka") for i in ids[:30]], T_MS) == 30
    got = marks.delivered(ids)
    assert [i for i in ids if got[i] == {"kafka"}] == ids[:30]
    assert all(got[i] == frozenset() for i in ids[30:])
    client.close()
