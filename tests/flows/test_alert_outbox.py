"""flows/alert_outbox.py against a real broker (Tansu), a real Redis and a real HTTP
receiver: each notice once on the alerts topic and once on the webhook, nothing again on a
replay or a restart, a failing webhook dead-lettered and marked, Kafka failures and Redis
outages. Retries wait through injected sleeps (recorded, not slept)."""

from __future__ import annotations

import base64
import hashlib
import json
import time

import msgspec
import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main

from connectors.schemas import DeadLetter
from connectors.webhooks import WebhookSender, verify
from flows.alert_notices import AlertNotice, alertmanager_payload
from flows.alert_outbox import AlertOutboxSink, OutboxCounts, alert_outbox
from flows.drop_detector import AlertFingerprint
from state.redis import Backoff
from storepulse import health
from storepulse.errors import BackendUnavailable, ConfigError
from storepulse.settings import Settings
from tests.fixtures.kafka import free_port

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
NOW_S = 1_767_229_200.0  # 01:00, the injected clock of the marks
WALL = "https://grafana.example/d/wall"


def notice(store: str, status: str = "firing") -> AlertNotice:
    ends = START_MS + 3_600_000 if status == "resolved" else None
    return AlertNotice(AlertFingerprint(store, START_MS), "M1", status, START_MS, ends, cause="traffic")  # type: ignore[arg-type]


def msg_id(store: str, status: str = "firing") -> str:
    """Worked out apart from the code: the first 16 hex of SHA-256 of ``drop:<store>:<start>``."""
    return f"msg_{hashlib.sha256(f'drop:{store}:{START_MS}'.encode()).hexdigest()[:16]}_{status}"


BATCH = [notice("S1"), notice("S2"), notice("S1", "resolved")]
IDS = [msg_id("S1"), msg_id("S2"), msg_id("S1", "resolved")]


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        assert len(self) < 50, "still waiting after 50 waits"
        self.append(seconds)


@pytest.fixture
def redis_url(redis_server, redis_client) -> str:
    return str(redis_server.url)  # redis_client has flushed it: no marks from other tests


@pytest.fixture
def topics(kafka_topic_factory) -> tuple[str, str]:
    return kafka_topic_factory(), kafka_topic_factory()  # alerts, dead letters


def outbox(kafka_broker, redis_url, topics, *, receiver=None, sleeps=None, attempts=3, **options) -> AlertOutboxSink:
    webhook = None
    if receiver is not None:

        def webhook() -> WebhookSender:
            return WebhookSender(
                receiver.url,
                SECRET,
                receiver="ops",
                max_attempts=attempts,
                sleep=Sleeps() if sleeps is None else sleeps,
                jitter=lambda d: d,
            )

    return AlertOutboxSink(
        kafka_broker.client_config(),
        redis_url,
        topic=topics[0],
        deadletter_topic=topics[1],
        receiver="ops",
        webhook=webhook,
        external_url=WALL,
        readiness=health.Readiness(),
        clock=lambda: NOW_S,
        **options,
    )


def header(received) -> str:
    [(name, value)] = received.headers
    assert name == "message_id"
    return value.decode()


def test_each_notice_once_to_kafka_and_once_to_the_webhook(kafka_broker, redis_url, redis_client, topics,
                                                           http_receiver) -> None:  # fmt: skip
    counts: list[OutboxCounts] = []
    sink = outbox(kafka_broker, redis_url, topics, receiver=http_receiver, on_batch=counts.append)
    sink.build("write_alerts", 0, 1).write_batch(BATCH)

    written = kafka_broker.read_topic(topics[0])
    assert [(r.key, header(r)) for r in written] == [(b"S1", IDS[0]), (b"S2", IDS[1]), (b"S1", IDS[2])]
    for received, sent in zip(written, BATCH, strict=True):
        payload = json.loads(received.value)
        assert payload == alertmanager_payload(sent, receiver="ops", external_url=WALL, generator_url=WALL)
        assert (payload["version"], payload["receiver"], payload["status"]) == ("4", "ops", sent.status)
        assert payload["alerts"][0]["fingerprint"] == IDS[written.index(received)].split("_")[1]

    requests = http_receiver.requests
    assert [r.headers["webhook-id"] for r in requests] == IDS
    for request, received in zip(requests, written, strict=True):
        verify(SECRET, request.headers, request.body, now_s=time.time())  # the receiver's check
        assert request.body == received.value  # the same bytes on both channels
    assert kafka_broker.read_topic(topics[1]) == []
    assert counts == [OutboxCounts(notices=3, kafka_sent=3, webhook_delivered=3)]
    assert redis_client.hgetall(f"sp:alert:{{{IDS[0]}}}") == {b"kafka": b"1767229200000", b"webhook": b"1767229200000"}


def test_a_replayed_batch_sends_nothing_new(kafka_broker, redis_url, topics, http_receiver) -> None:
    counts: list[OutboxCounts] = []
    partition = outbox(kafka_broker, redis_url, topics, receiver=http_receiver, on_batch=counts.append).build(
        "write_alerts", 0, 1
    )
    partition.write_batch(BATCH[:2])
    partition.write_batch(BATCH[:2])  # the replay after a crash: the same notices again
    partition.write_batch([BATCH[1], BATCH[2], BATCH[2]])  # one old, one new (twice in its batch)

    assert [header(r) for r in kafka_broker.read_topic(topics[0])] == IDS
    assert [r.headers["webhook-id"] for r in http_receiver.requests] == IDS
    assert counts[1] == OutboxCounts(notices=2, kafka_skipped=2, webhook_skipped=2)
    assert counts[2] == OutboxCounts(notices=2, kafka_sent=1, kafka_skipped=1, webhook_delivered=1, webhook_skipped=1)


def test_a_restarted_sink_sends_nothing_again(kafka_broker, redis_url, topics, http_receiver) -> None:
    outbox(kafka_broker, redis_url, topics, receiver=http_receiver).build("write_alerts", 0, 1).write_batch(BATCH)
    restarted = outbox(kafka_broker, redis_url, topics, receiver=http_receiver)  # a new process
    restarted.build("write_alerts", 0, 1).write_batch(BATCH)
    assert len(kafka_broker.read_topic(topics[0])) == 3
    assert len(http_receiver.requests) == 3


def test_a_crash_before_the_marks_resends_once_with_the_same_ids(kafka_broker, redis_url, redis_client, topics,
                                                                 http_receiver) -> None:  # fmt: skip
    sink = outbox(kafka_broker, redis_url, topics, receiver=http_receiver)
    sink.build("write_alerts", 0, 1).write_batch(BATCH[:1])
    redis_client.delete(f"sp:alert:{{{IDS[0]}}}")  # the crash came after delivery, before the marks
    sink.build("write_alerts", 0, 1).write_batch(BATCH[:1])
    sink.build("write_alerts", 0, 1).write_batch(BATCH[:1])

    assert [header(r) for r in kafka_broker.read_topic(topics[0])] == [IDS[0], IDS[0]]
    first, again = http_receiver.requests
    assert first.headers["webhook-id"] == again.headers["webhook-id"] == IDS[0]  # receivers drop it by id
    assert first.body == again.body


def test_a_webhook_failing_every_attempt_is_dead_lettered_marked_and_the_engine_goes_on(
    kafka_broker, redis_url, redis_client, topics, http_receiver
) -> None:
    http_receiver.fail_all(500)
    sleeps = Sleeps()
    counts: list[OutboxCounts] = []
    partition = outbox(
        kafka_broker, redis_url, topics, receiver=http_receiver, sleeps=sleeps, attempts=3,
        deadletter_raw_bytes=100, on_batch=counts.append,
    ).build("write_alerts", 0, 1)  # fmt: skip
    partition.write_batch(BATCH[:1])

    assert len(http_receiver.requests) == 3 and sleeps == [1.0, 2.0]  # 3 attempts, backoff not slept
    [alert] = kafka_broker.read_topic(topics[0])
    [dead_message] = kafka_broker.read_topic(topics[1])
    dead = msgspec.json.decode(dead_message.value, type=DeadLetter)
    assert dead_message.key == topics[0].encode()
    assert (dead.topic, dead.partition, dead.offset, dead.reason) == (topics[0], -1, -1, "webhook_failed")
    assert dead.detail.startswith("http_5xx: HTTP 500 Internal Server Error (attempt 3 of 3")
    assert (dead.raw, dead.raw_truncated) == (alert.value[:100].decode(), True)
    assert redis_client.hkeys(f"sp:alert:{{{IDS[0]}}}") == [b"kafka", b"webhook"]  # handled
    assert counts == [OutboxCounts(notices=1, kafka_sent=1, webhook_failed=1)]

    http_receiver.fail_all(200)  # the receiver is back
    partition.write_batch(BATCH[:2])  # a replay of the failed one, and a new one
    assert [r.headers["webhook-id"] for r in http_receiver.requests[3:]] == [IDS[1]]
    assert len(kafka_broker.read_topic(topics[1])) == 1  # no second dead letter


def test_without_a_webhook_only_kafka_and_a_webhook_added_later_sends_only_webhooks(
    kafka_broker, redis_url, redis_client, topics, http_receiver
) -> None:
    outbox(kafka_broker, redis_url, topics).build("write_alerts", 0, 1).write_batch(BATCH[:1])
    assert redis_client.hkeys(f"sp:alert:{{{IDS[0]}}}") == [b"kafka"]
    assert http_receiver.requests == []
    # A restart with a webhook configured replays the notice: the webhook gets it, Kafka not again.
    outbox(kafka_broker, redis_url, topics, receiver=http_receiver).build("write_alerts", 0, 1).write_batch(BATCH[:1])
    assert [r.headers["webhook-id"] for r in http_receiver.requests] == [IDS[0]]
    assert len(kafka_broker.read_topic(topics[0])) == 1


def test_an_undelivered_kafka_batch_raises_and_marks_nothing(redis_url, redis_client, http_receiver) -> None:
    sink = AlertOutboxSink(
        {"bootstrap.servers": f"127.0.0.1:{free_port()}", "message.timeout.ms": "200", "log_level": "0"},
        redis_url,
        topic="alerts",
        deadletter_topic="deadletter",
        receiver="ops",
        webhook=lambda: WebhookSender(http_receiver.url, SECRET, receiver="ops"),
        flush_timeout_s=5.0,
        readiness=health.Readiness(),
    )
    partition = sink.build("write_alerts", 0, 1)
    with pytest.raises(BackendUnavailable, match="'alerts'"):
        partition.write_batch(BATCH[:1])
    assert redis_client.keys("sp:alert:*") == []  # replayed after the restart, not skipped
    assert http_receiver.requests == []  # nothing is sent on before Kafka has it


def test_a_redis_outage_holds_the_batch_until_redis_answers(kafka_broker, make_redis_server, topics,
                                                            http_receiver) -> None:  # fmt: skip
    server = make_redis_server()
    readiness = health.Readiness()
    seen: list[bool] = []

    def sleep(seconds: float) -> None:  # the outage ends during the first wait
        seen.append(readiness.is_up("redis-alerts[0]"))
        assert len(seen) < 20
        if len(seen) == 1:
            server.start()

    sink = outbox(kafka_broker, server.url, topics, receiver=http_receiver, backoff=Backoff(0.2, 5.0))
    sink.readiness = readiness
    sink.sleep = sleep
    partition = sink.build("write_alerts", 0, 1)
    server.stop()
    partition.write_batch(BATCH[:1])
    assert seen == [False]  # one wait, not ready while it lasted
    assert readiness.is_up("redis-alerts[0]")
    assert [header(r) for r in kafka_broker.read_topic(topics[0])] == [IDS[0]]
    assert len(http_receiver.requests) == 1


def test_in_a_dataflow_run_twice_each_notice_goes_out_once(kafka_broker, redis_url, topics, http_receiver) -> None:
    sink = outbox(kafka_broker, redis_url, topics, receiver=http_receiver)
    for _ in range(2):  # the second run replays every input, as from an old snapshot
        flow = Dataflow("alerts_test")
        notices = op.input("read_notices", flow, TestingSource(BATCH, batch_size=2))
        op.output("write_alerts", notices, sink)
        run_main(flow)
    assert [header(r) for r in kafka_broker.read_topic(topics[0])] == IDS
    assert [r.headers["webhook-id"] for r in http_receiver.requests] == IDS


def test_the_outbox_from_settings(kafka_broker, redis_url, topics, http_receiver) -> None:
    settings = Settings.from_env(
        {
            "STOREPULSE_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
            "STOREPULSE_REDIS_URL": redis_url,
            "STOREPULSE_TOPIC_ALERTS": topics[0],
            "STOREPULSE_TOPIC_DEADLETTER": topics[1],
            "STOREPULSE_ALERT_WEBHOOK_URL": http_receiver.url,
            "STOREPULSE_ALERT_WEBHOOK_SECRET": SECRET,
            "STOREPULSE_ALERT_EXTERNAL_URL": WALL,
        }
    )
    alert_outbox(settings).build("write_alerts", 0, 1).write_batch(BATCH[:1])
    [written] = kafka_broker.read_topic(topics[0])
    [request] = http_receiver.requests
    verify(SECRET, request.headers, request.body, now_s=time.time())
    payload = json.loads(request.body)
    assert (payload["receiver"], payload["externalURL"], payload["alerts"][0]["generatorURL"]) == (
        "storepulse", WALL, WALL,
    )  # fmt: skip
    assert request.body == written.value
    kafka_only = Settings.from_env({"STOREPULSE_REDIS_URL": redis_url})
    assert alert_outbox(kafka_only).webhook is None


def test_a_webhook_url_without_its_secret_is_refused_naming_the_secret() -> None:
    with pytest.raises(ConfigError, match="^STOREPULSE_ALERT_WEBHOOK_SECRET is not set"):
        Settings.from_env({"STOREPULSE_ALERT_WEBHOOK_URL": "https://hooks.example/alerts"})
    with pytest.raises(ConfigError, match="^STOREPULSE_REDIS_URL is not set"):
        alert_outbox(Settings())
