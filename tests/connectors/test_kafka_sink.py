"""ConfirmingProducer and KafkaConfirmedSink against a real Kafka-protocol broker (Tansu).

What was written is checked by reading the topic back with a plain consumer to the
partition-EOF event (not the broker's high watermark, which Tansu can give short).
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main
from prometheus_client import REGISTRY

from connectors.kafka_sink import ConfirmingProducer, KafkaConfirmedSink
from storepulse.errors import BackendUnavailable
from tests.fixtures.kafka import free_port


def produced_total(topic: str) -> float:
    return REGISTRY.get_sample_value(
        "storepulse_kafka_produced_messages_total", {"topic": topic}
    ) or 0.0


def failures_total(topic: str) -> float:
    return REGISTRY.get_sample_value(
        "storepulse_kafka_delivery_failures_total", {"topic": topic}
    ) or 0.0


def test_every_message_delivered_and_counted(kafka_broker, kafka_topic_factory):
    topic_a, topic_b = kafka_topic_factory(), kafka_topic_factory(partitions=2)
    producer = ConfirmingProducer(kafka_broker.client_config())
    msgs_a = [(f"s{i % 5}".encode(), f"a{i}".encode()) for i in range(300)]
    msgs_b = [(None, f"b{i}".encode()) for i in range(200)]
    for key, value in msgs_a:
        producer.produce(topic_a, key, value)
    for key, value in msgs_b:
        producer.produce(topic_b, key, value)
    producer.flush(timeout_s=20)

    assert (producer.delivered, producer.failed, producer.pending) == (500, 0, 0)
    assert produced_total(topic_a) == 300 and produced_total(topic_b) == 200
    assert [(r.key, r.value) for r in kafka_broker.read_topic(topic_a)] == msgs_a  # one partition
    assert Counter(r.value for r in kafka_broker.read_topic(topic_b)) == Counter(
        v for _, v in msgs_b
    )


def test_full_queue_is_drained_not_raised(kafka_broker, kafka_topic_factory):
    topic = kafka_topic_factory()
    producer = ConfirmingProducer(
        {**kafka_broker.client_config(), "queue.buffering.max.messages": 50}
    )
    for i in range(400):  # 8x the queue: produce must wait for room, not raise BufferError
        producer.produce(topic, None, str(i).encode())
    producer.flush(timeout_s=20)
    assert producer.delivered == 400
    assert [r.value for r in kafka_broker.read_topic(topic)] == [str(i).encode() for i in range(400)]


def test_flush_raises_naming_topic_and_error_when_nothing_listens():
    topic = "coupon.pushes.nowhere"
    producer = ConfirmingProducer(
        {"bootstrap.servers": f"127.0.0.1:{free_port()}", "message.timeout.ms": 200,
         "log_level": 0},
        max_attempts=2,
    )
    failures_before = failures_total(topic)
    for i in range(3):
        producer.produce(topic, b"m1", f"push-{i}".encode())
    with pytest.raises(BackendUnavailable) as caught:
        producer.flush(timeout_s=10)
    message = str(caught.value)
    assert f"3 to topic {topic!r}" in message
    assert "_MSG_TIMED_OUT" in message
    # gave up after 2 attempts, not at the deadline: nothing left waiting or unretried
    assert "no delivery report" not in message and "not retried" not in message
    assert (producer.delivered, producer.failed) == (0, 6)  # 3 messages x 2 attempts
    assert failures_total(topic) - failures_before == 6
    producer.flush(timeout_s=1)  # the failure was reported once; nothing is left over


def test_flush_raises_when_broker_frozen_beyond_the_deadline(kafka_broker, kafka_topic_factory):
    topic = kafka_topic_factory()
    producer = ConfirmingProducer(kafka_broker.client_config())  # message.timeout.ms 10 s
    with kafka_broker.paused():
        producer.produce(topic, None, b"stuck")
        with pytest.raises(BackendUnavailable, match=f"1 to topic '{topic}'.*no delivery report"):
            producer.flush(timeout_s=1.0)
    producer.flush(timeout_s=20)  # once the broker is back, the queued message is confirmed
    assert producer.delivered == 1
    assert [r.value for r in kafka_broker.read_topic(topic)] == [b"stuck"]


def test_timed_out_deliveries_are_retried_through_an_outage(kafka_broker, kafka_topic_factory):
    topic = kafka_topic_factory()
    producer = ConfirmingProducer({**kafka_broker.client_config(), "message.timeout.ms": 700})
    producer.produce(topic, None, b"warm-up")
    producer.flush(timeout_s=10)
    values = [f"v{i}".encode() for i in range(20)]
    kafka_broker.pause()
    resume = threading.Timer(1.8, kafka_broker.resume)  # the outage lasts 1.8 s
    resume.start()
    try:
        for value in values:
            producer.produce(topic, b"k", value, [("message_id", value)])  # headers survive retries
        producer.flush(timeout_s=20)
    finally:
        resume.cancel()
        kafka_broker.resume()

    assert producer.delivered == 21
    assert producer.failed >= 20  # every message timed out at least once and was retried
    records = kafka_broker.read_topic(topic)
    read = Counter(r.value for r in records)
    assert set(read) == {b"warm-up", *values}  # at-least-once: all there, some maybe twice
    assert all(r.headers == [("message_id", r.value)] for r in records if r.value != b"warm-up")


def test_authentication_failure_is_reported_with_what_to_do(kafka_broker_factory):
    secured = kafka_broker_factory(authentication=True)
    producer = ConfirmingProducer(
        {"bootstrap.servers": secured.bootstrap, "security.protocol": "SASL_PLAINTEXT",
         "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "nobody",
         "sasl.password": "wrong", "log_level": 0}
    )
    producer.produce("alerts", b"S001", b"{}")
    with pytest.raises(BackendUnavailable, match="STOREPULSE_KAFKA_SASL_PASSWORD"):
        producer.flush(timeout_s=10)


def test_sink_delivers_every_item_of_a_flow(kafka_broker, kafka_topic_factory):
    topic = kafka_topic_factory()
    items = [(f"M{i % 7}".encode() if i % 4 else None, f'{{"push": {i}}}'.encode())
             for i in range(1000)]
    flow = Dataflow("sink_all")
    stream = op.input("inp", flow, TestingSource(items, batch_size=64))
    op.output("write_pushes", stream, KafkaConfirmedSink(kafka_broker.client_config(), topic))
    before = produced_total(topic)
    run_main(flow)
    assert [(r.key, r.value) for r in kafka_broker.read_topic(topic)] == items
    assert produced_total(topic) - before == 1000


def test_sink_failure_stops_the_flow_with_a_clear_error_not_an_abort():
    # bytewax closes the sink while unwinding from the failed write_batch; if close
    # raised too, the whole process would abort instead of raising.
    topic = "alerts.nowhere"
    sink = KafkaConfirmedSink(
        {"bootstrap.servers": f"127.0.0.1:{free_port()}", "message.timeout.ms": 200,
         "log_level": 0},
        topic,
        flush_timeout_s=1.0,
    )
    flow = Dataflow("sink_down")
    op.output("write_alerts", op.input("inp", flow, TestingSource([(b"S1", b"{}")])), sink)
    with pytest.raises(Exception) as caught:  # noqa: B017  bytewax wraps the cause
        run_main(flow)
    chain, exc = [], caught.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert any(isinstance(e, BackendUnavailable) and topic in str(e) for e in chain), chain
