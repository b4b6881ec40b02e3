"""Sales-drop alerts from `storepulse run`, real Kafka (Tansu), Redis and a webhook receiver.

Sixteen days of a steady store (2 sales every 5 minutes, day and night) teach the
detector; then nothing sells for three hours (a WiFi sensor keeps event time moving), and
an alert must fire; the engine is killed and started again, which replays every input
(no recovery directory); sales come back and the alert must resolve. Each notice reaches
the alerts topic and the webhook exactly once, signed, in Alertmanager's v4 format.
"""

from __future__ import annotations

import base64
import json
import time

import pytest

from connectors.catalog import Catalog
from connectors.webhooks import verify
from state.catalog import CatalogStore
from tests.integration.engine_process import EngineProcess

pytestmark = pytest.mark.slow
MIN = 60_000
BUCKET = 5 * MIN
DAY = 86_400_000
SECRET = "whsec_" + base64.b64encode(b"alerts-integration-test-secret!!").decode()
CATALOG = Catalog.from_yaml("""
stores:
  - {store_id: S9, merchant_id: M9, name: Noodles, category: food, tz: UTC, lat: 0, lon: 0, hours: "00:00-00:00"}
sensors:
  - {sensor_id: AP-9, mall_id: null, store_id: S9, zone: S9-floor, lat: 0, lon: 0}
""")


def sale(ts: int, n: int) -> tuple[bytes, bytes]:
    body = {"type": "sale", "txn_id": f"T{n}", "ts": ts, "merchant_id": "M9", "store_id": "S9", "amount": 1500,
            "currency": "CNY", "payment": "wechat" if n % 2 else "alipay"}  # fmt: skip
    return b"S9", json.dumps(body).encode()


def sighting(ts: int) -> tuple[bytes, bytes]:
    return b"AP-9", json.dumps({"sensor_id": "AP-9", "ts": ts, "mac": "a4:5e:60:1b:22:9c", "rssi": -60}).encode()


def steady(start: int, end: int, first: int) -> list[tuple[bytes, bytes]]:
    """Two sales in every 5-minute bucket of [start, end), at +1 and +3 minutes."""
    return [sale(b + off, first + 2 * i + j) for i, b in enumerate(range(start, end, BUCKET)) for j, off in
            enumerate((MIN, 3 * MIN))]  # fmt: skip


def test_a_drop_alerts_once_resolves_once_across_a_crash(
    engine_env, kafka_broker, kafka_topic_factory, redis_client, http_receiver, tmp_path
) -> None:
    now = int(time.time() * 1000) // BUCKET * BUCKET
    recovered = now - 45 * MIN  # sales come back here, for 40 minutes
    drop = recovered - 3 * 3_600_000  # and stop here for three hours
    start = drop - 16 * DAY
    alerts_topic = kafka_topic_factory(1)
    topics, env = engine_env(
        1,
        STOREPULSE_TOPIC_ALERTS=alerts_topic,
        STOREPULSE_ALERT_WEBHOOK_URL=http_receiver.url,
        STOREPULSE_ALERT_WEBHOOK_SECRET=SECRET,
        STOREPULSE_ALERT_RECEIVER="ops",
        STOREPULSE_MAX_EVENT_AGE_S=str(20 * 86_400),
    )
    CatalogStore(redis_client).save(CATALOG)
    history = steady(start, drop, 0)
    kafka_broker.produce(topics["transactions"], history, partition=0)
    kafka_broker.produce(topics["probes"], [sighting(t) for t in range(drop, recovered, MIN)])

    engine = EngineProcess(env, tmp_path / "engine.log").start()
    try:
        engine.wait_for(lambda: len(http_receiver.requests) >= 1, "the firing webhook", 180)
        engine.kill()  # a crash: no recovery directory, so the restart replays every input
        engine = EngineProcess(env, tmp_path / "engine.log").start()
        back = steady(recovered, recovered + 40 * MIN, len(history))
        kafka_broker.produce(topics["transactions"], back, partition=0)
        kafka_broker.produce(topics["probes"], [sighting(t) for t in range(recovered, recovered + 40 * MIN, MIN)])
        # The replayed firing comes before the resolution in the one store's stream, so
        # by the time the resolution is delivered the replay has been through the outbox.
        engine.wait_for(lambda: len(http_receiver.requests) >= 2, "the resolved webhook", 180)
        # The restarted engine made both notices again and delivered only the resolution.
        engine.wait_for(lambda: engine.metric("storepulse_alert_notices_total") == 2, "both notices made again")
        engine.wait_for(
            lambda: engine.metric("storepulse_webhook_deliveries_total", reason="delivered") == 1, "one delivery"
        )
        # the replayed firing was skipped on both channels, the resolution sent on both
        def counted(outcome: str) -> list[float]:
            return [engine.metric("storepulse_alert_deliveries_total", channel=c, outcome=outcome)
                    for c in ("kafka", "webhook")]  # fmt: skip

        engine.wait_for(lambda: counted("sent") == counted("skipped") == [1, 1], "the outbox's counts")
    finally:
        engine.stop()

    requests = http_receiver.requests
    assert len(requests) == 2, [r.body[:200] for r in requests]
    bodies = []
    for r in requests:
        headers = {k.lower(): v for k, v in r.headers.items()}
        verify(SECRET, headers, r.body, now_s=int(headers["webhook-timestamp"]))  # raises if not signed right
        bodies.append(json.loads(r.body))
    firing, resolved = bodies
    assert (firing["version"], firing["status"], firing["receiver"]) == ("4", "firing", "ops")
    assert resolved["status"] == "resolved"
    (alert,) = firing["alerts"]
    assert alert["labels"]["store"] == "S9" and alert["labels"]["alertname"] == "StoreSalesDrop"
    assert alert["labels"]["severity"] == "critical"  # nothing sold: a 100% drop
    assert alert["annotations"]["actual"] == "0"
    assert resolved["alerts"][0]["fingerprint"] == alert["fingerprint"]
    # startsAt is when the drop began: the first bucket with nothing sold
    assert alert["startsAt"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(drop / 1000))
    ids = [{k.lower(): v for k, v in r.headers.items()}["webhook-id"] for r in requests]
    assert len(set(ids)) == 2

    on_topic = kafka_broker.read_topic(alerts_topic)
    assert [m.key for m in on_topic] == [b"S9", b"S9"]
    assert [dict(m.headers)["message_id"].decode() for m in on_topic] == ids
    assert [json.loads(m.value or b"") for m in on_topic] == bodies
