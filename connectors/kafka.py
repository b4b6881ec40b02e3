"""Kafka connectors of storepulse, in one import: source, sink, producer, topic admin.

Delivery guarantees: the source is at-least-once (offsets live in bytewax snapshots;
after a crash, what was read since the last snapshot is read again); the sink and the
producer are at-least-once (a batch is confirmed by Kafka before bytewax may snapshot
past it; retries and replays can write a message twice, never zero times).

- ``KafkaBatchSource`` (``connectors.kafka_source``): a topic as ``RawBatch`` items, one
  bytewax partition per Kafka partition, idle markers, transient errors survived.
- ``ConfirmingProducer`` and ``KafkaConfirmedSink`` (``connectors.kafka_sink``): produce
  with delivery reports, retries, and a flush that raises if anything is undelivered.
- ``ensure_topics``, ``list_partitions`` (``connectors.kafka_admin``).

>>> from connectors import kafka
>>> sorted(kafka.__all__)[:3]
['ConfirmingProducer', 'KafkaBatchSource', 'KafkaConfirmedSink']
"""

from connectors.kafka_admin import ensure_topics, list_partitions
from connectors.kafka_sink import ConfirmingProducer, KafkaConfirmedSink
from connectors.kafka_source import KafkaBatchSource

__all__ = [
    "ConfirmingProducer",
    "KafkaBatchSource",
    "KafkaConfirmedSink",
    "ensure_topics",
    "list_partitions",
]
