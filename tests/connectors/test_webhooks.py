"""connectors/webhooks.py and flows/alert_notices.py: the Alertmanager v4 payload worked out by hand, Standard Webhooks
signatures checked at the receiver's end, and the sender against a real HTTP server on a
free loopback port (retries counted in requests; waits recorded by an injected sleep)."""

from __future__ import annotations

import base64
import hashlib
import json
import threading

import pytest
from prometheus_client import REGISTRY

from connectors.webhooks import (
    Delivery,
    SignatureError,
    WebhookSender,
    full_jitter,
    parse_secret,
    sign,
    verify,
)
from flows.alert_notices import (
    AlertNotice,
    alertmanager_payload,
    encode_body,
    fingerprint_hex,
    message_id,
    send_alert,
)
from flows.drop_context import Context
from flows.drop_detector import AlertFingerprint, DropEvent
from state.redis import Backoff
from tests.fixtures.http import HttpReceiver
from tests.fixtures.servers import free_port

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
NOW_S = 1_767_229_200.0  # 2026-01-01T01:00:00Z, the injected clock
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
FP = AlertFingerprint("S1", START_MS)
FP_HEX = hashlib.sha256(b"drop:S1:1767225600000").hexdigest()[:16]  # independent of the code


def firing(**changes: object) -> AlertNotice:
    fields: dict[str, object] = dict(
        fingerprint=FP,
        merchant_id="M7",
        status="firing",
        starts_at_ms=START_MS,
        severity="critical",
        summary="Sales at store S1 are 50% below expected",
        description="30 sales where 60.0 were expected; cause: payment:wechat",
        expected=60.0,
        actual=30,
        drop_pct=50.0,
        footfall_ratio=1.0,
        last_sale_ts=START_MS + 1_500_000,  # 00:25
        cause="payment:wechat",
    )
    fields.update(changes)
    return AlertNotice(**fields)  # type: ignore[arg-type]


# ---- the payload --------------------------------------------------------------------------


def test_firing_payload_is_alertmanager_v4_exactly() -> None:
    labels = {
        "alertname": "StoreSalesDrop",
        "cause": "payment:wechat",
        "merchant": "M7",
        "severity": "critical",
        "store": "S1",
    }
    annotations = {
        "alert_id": "drop:S1:1767225600000",
        "summary": "Sales at store S1 are 50% below expected",
        "description": "30 sales where 60.0 were expected; cause: payment:wechat",
        "expected": "60",
        "actual": "30",
        "drop_pct": "50",
        "footfall_ratio": "1",
        "last_sale": "2026-01-01T00:25:00Z",  # START + 1 500 000 ms = 25 min
    }
    golden = {
        "version": "4",
        "groupKey": '{}:{alertname="StoreSalesDrop", store="S1"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "ops-dingtalk",
        "groupLabels": {"alertname": "StoreSalesDrop", "store": "S1"},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "https://storepulse.example",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": annotations,
                "startsAt": "2026-01-01T00:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",  # Go's zero time: not ended
                "generatorURL": "https://grafana.example/d/drops",
                "fingerprint": FP_HEX,
            }
        ],
    }
    payload = alertmanager_payload(
        firing(),
        receiver="ops-dingtalk",
        external_url="https://storepulse.example",
        generator_url="https://grafana.example/d/drops",
    )
    assert payload == golden
    assert json.loads(encode_body(payload)) == golden


def test_resolved_payload_ends_at_the_resolution_and_leaves_unknown_numbers_out() -> None:
    notice = firing(status="resolved", ends_at_ms=START_MS + 7_200_250, footfall_ratio=None, last_sale_ts=None)
    payload = alertmanager_payload(notice, receiver="r")
    alert = payload["alerts"][0]
    assert payload["status"] == alert["status"] == "resolved"
    assert alert["endsAt"] == "2026-01-01T02:00:00.25Z"  # + 2 h 250 ms, trailing zeros cut as Go does
    assert "footfall_ratio" not in alert["annotations"] and "last_sale" not in alert["annotations"]
    assert alert["fingerprint"] == FP_HEX  # the same alert as its firing


def test_notice_from_a_drop_event_and_its_context() -> None:
    ctx = Context(60.0, 30, 50.0, 400, 400.0, 1.0, START_MS + 1_500_000, ("wechat",), "payment:wechat")
    notice = AlertNotice.from_event(DropEvent("firing", FP, START_MS + 3_000_000, 0.7), ctx, merchant_id="M7")
    assert notice == firing(severity="warning", summary=notice.summary, description=notice.description)
    assert notice.summary == "Sales at store S1 are 50% below expected for 50 minutes"
    assert notice.description == (
        "30 sales where 60.0 were expected. No wechat sales while other payment methods kept selling: "
        "a wechat payment outage is likely (footfall 1x its normal)."
    )
    done = AlertNotice.from_event(DropEvent("resolved", FP, START_MS + 9_000_000, 0.1), ctx, merchant_id="M7")
    assert (done.status, done.starts_at_ms, done.ends_at_ms) == ("resolved", START_MS, START_MS + 9_000_000)


def test_fingerprint_is_16_hex_of_the_alert_identity_and_stable() -> None:
    assert fingerprint_hex(FP) == FP_HEX and len(FP_HEX) == 16
    assert fingerprint_hex(AlertFingerprint.parse(FP.format())) == FP_HEX  # as after a restart
    assert fingerprint_hex(AlertFingerprint("S1", START_MS + 300_000)) != FP_HEX
    assert message_id(firing()) == f"msg_{FP_HEX}_firing"
    assert message_id(firing(status="resolved", ends_at_ms=START_MS + 1)) == f"msg_{FP_HEX}_resolved"


def test_notice_refuses_an_impossible_lifecycle() -> None:
    with pytest.raises(ValueError, match="firing notice has no ends_at_ms"):
        firing(ends_at_ms=START_MS + 1)
    with pytest.raises(ValueError, match="resolved notice needs ends_at_ms"):
        firing(status="resolved", ends_at_ms=START_MS - 1)


# ---- signatures ----------------------------------------------------------------------------


def signed_headers(body: bytes, *, ts: int = int(NOW_S), secret: str | bytes = SECRET) -> dict[str, str]:
    return {"Webhook-Id": "msg_1", "Webhook-Timestamp": str(ts), "Webhook-Signature": sign(secret, "msg_1", ts, body)}


def test_signature_is_the_standard_webhooks_hmac() -> None:
    # The published example of standardwebhooks.com / Svix.
    got = sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
               b'{"test": 2432232314}')  # fmt: skip
    assert got == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    # Raw bytes and the whsec_ form of the same key sign alike.
    assert sign(b"0123456789abcdef0123456789abcdef", "m", 1, b"{}") == sign(SECRET, "m", 1, b"{}")


def test_verify_accepts_the_signed_body_and_refuses_everything_else() -> None:
    body = b'{"status":"firing"}'
    verify(SECRET, signed_headers(body), body, now_s=NOW_S + 299)
    with pytest.raises(SignatureError, match="no v1 signature matches"):
        verify("whsec_" + base64.b64encode(b"another secret").decode(), signed_headers(body), body, now_s=NOW_S)
    with pytest.raises(SignatureError, match="no v1 signature matches"):
        verify(SECRET, signed_headers(body), b'{"status":"resolved"}', now_s=NOW_S)
    with pytest.raises(SignatureError, match="outside the tolerance"):
        verify(SECRET, signed_headers(body, ts=int(NOW_S) - 301), body, now_s=NOW_S)
    with pytest.raises(SignatureError, match="outside the tolerance"):
        verify(SECRET, signed_headers(body, ts=int(NOW_S) + 301), body, now_s=NOW_S)
    forged = signed_headers(body) | {"Webhook-Id": "msg_2"}  # a signature is bound to its id
    with pytest.raises(SignatureError, match="no v1 signature matches"):
        verify(SECRET, forged, body, now_s=NOW_S)
    missing = {k: v for k, v in signed_headers(body).items() if k != "Webhook-Signature"}
    with pytest.raises(SignatureError, match="webhook-signature: header missing"):
        verify(SECRET, missing, body, now_s=NOW_S)


def test_verify_takes_any_of_several_signatures() -> None:
    body = b"{}"
    headers = signed_headers(body)
    headers["Webhook-Signature"] = "v1,bm90IGl0 " + headers["Webhook-Signature"]  # old key first
    verify(SECRET, headers, body, now_s=NOW_S)


def test_secret_forms() -> None:
    assert parse_secret(SECRET) == b"0123456789abcdef0123456789abcdef"
    with pytest.raises(ValueError, match="whsec_"):
        parse_secret("plain text")
    with pytest.raises(ValueError, match="not base64"):
        parse_secret("whsec_***")


# ---- the sender against a real HTTP server -------------------------------------------------


class Sleeps(list[float]):
    """An injected sleep: records each wait instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def sender(url: str, sleeps: Sleeps, **options: object) -> WebhookSender:
    defaults: dict[str, object] = dict(
        receiver="ops",
        timeout_s=2.0,
        max_attempts=4,
        backoff=Backoff(base_s=1.0, cap_s=5.0),
        sleep=sleeps,
        clock=lambda: NOW_S,
        jitter=lambda d: d,  # no randomness: waits are the backoff's
    )
    defaults.update(options)
    return WebhookSender(url, SECRET, **defaults)  # type: ignore[arg-type]


def deliveries(reason: str) -> float:
    value = REGISTRY.get_sample_value("storepulse_webhook_deliveries_total", {"receiver": "ops", "reason": reason})
    return value or 0.0


def attempt_failures(reason: str) -> float:
    labels = {"receiver": "ops", "reason": reason}
    return REGISTRY.get_sample_value("storepulse_webhook_attempt_failures_total", labels) or 0.0


def test_an_alert_arrives_signed_with_its_payload(http_receiver: HttpReceiver) -> None:
    before = deliveries("delivered")
    result = send_alert(sender(http_receiver.url, Sleeps()), firing(), external_url="https://storepulse.example")
    assert result == Delivery(f"msg_{FP_HEX}_firing", True, 1, 200, "delivered", "HTTP 200")
    [got] = http_receiver.requests
    verify(SECRET, got.headers, got.body, now_s=NOW_S)  # the receiver's own check passes
    assert got.headers["webhook-id"] == f"msg_{FP_HEX}_firing"
    assert got.headers["webhook-timestamp"] == "1767229200"
    assert got.headers["Content-Type"] == "application/json"
    assert json.loads(got.body) == alertmanager_payload(
        firing(), receiver="ops", external_url="https://storepulse.example"
    )
    assert deliveries("delivered") == before + 1


def test_the_same_alert_sent_twice_carries_the_same_id(http_receiver: HttpReceiver) -> None:
    clock = iter([NOW_S, NOW_S + 60])  # a replay a minute later, as after a restart
    first = sender(http_receiver.url, Sleeps(), clock=lambda: next(clock))
    send_alert(first, firing())
    send_alert(first, firing())
    a, b = http_receiver.requests
    assert a.headers["webhook-id"] == b.headers["webhook-id"] == f"msg_{FP_HEX}_firing"
    assert a.body == b.body
    assert (a.headers["webhook-timestamp"], b.headers["webhook-timestamp"]) == ("1767229200", "1767229260")
    verify(SECRET, b.headers, b.body, now_s=NOW_S + 60)


def test_503_is_retried_with_backoff_then_delivered(http_receiver: HttpReceiver) -> None:
    http_receiver.script = [(503, {}), (503, {})]
    sleeps = Sleeps()
    before = attempt_failures("http_5xx")
    result = sender(http_receiver.url, sleeps).send("msg_x", b"{}")
    assert (result.ok, result.attempts, result.status, result.reason) == (True, 3, 200, "delivered")
    assert len(http_receiver.requests) == 3
    assert sleeps == [1.0, 2.0]  # base 1 s, doubling
    assert {r.headers["webhook-id"] for r in http_receiver.requests} == {"msg_x"}
    assert attempt_failures("http_5xx") == before + 2


def test_each_attempt_is_signed_at_its_own_time(http_receiver: HttpReceiver) -> None:
    http_receiver.script = [(503, {})]
    clock = iter([NOW_S, NOW_S + 400])  # the retry comes after the tolerance window of the first
    sender(http_receiver.url, Sleeps(), clock=lambda: next(clock)).send("msg_x", b"{}")
    first, second = http_receiver.requests
    assert second.headers["webhook-timestamp"] == str(int(NOW_S) + 400)
    verify(SECRET, second.headers, second.body, now_s=NOW_S + 400)


def test_retry_after_is_honoured_and_capped(http_receiver: HttpReceiver) -> None:
    http_receiver.script = [(429, {"Retry-After": "7"}), (503, {"Retry-After": "3600"}), (503, {})]
    sleeps = Sleeps()
    result = sender(http_receiver.url, sleeps, retry_after_cap_s=30.0).send("msg_x", b"{}")
    assert result.ok and result.attempts == 4
    assert sleeps == [7.0, 30.0, 4.0]  # as asked; capped at 30; no header: the backoff's third wait


def test_retry_after_as_an_http_date(http_receiver: HttpReceiver) -> None:
    http_receiver.script = [(503, {"Retry-After": "Thu, 01 Jan 2026 01:00:12 GMT"})]  # NOW + 12 s
    sleeps = Sleeps()
    assert sender(http_receiver.url, sleeps).send("msg_x", b"{}").ok
    assert sleeps == [12.0]


def test_400_is_not_retried(http_receiver: HttpReceiver) -> None:
    http_receiver.script = [(400, {})]
    sleeps = Sleeps()
    before = deliveries("rejected")
    result = sender(http_receiver.url, sleeps).send("msg_x", b"{}")
    assert (result.ok, result.attempts, result.status, result.reason) == (False, 1, 400, "rejected")
    assert "HTTP 400 Bad Request" in result.detail
    assert len(http_receiver.requests) == 1 and sleeps == []
    assert deliveries("rejected") == before + 1


def test_gives_up_after_max_attempts_with_the_reason(http_receiver: HttpReceiver) -> None:
    http_receiver.script = [(500, {})] * 10
    sleeps = Sleeps()
    before = deliveries("http_5xx")
    result = sender(http_receiver.url, sleeps, max_attempts=3).send("msg_x", b"{}")
    assert (result.ok, result.attempts, result.status, result.reason) == (False, 3, 500, "http_5xx")
    assert "HTTP 500 Internal Server Error (attempt 3 of 3" in result.detail
    assert len(http_receiver.requests) == 3 and sleeps == [1.0, 2.0]  # no wait after the last attempt
    assert deliveries("http_5xx") == before + 1


def test_backoff_is_capped(http_receiver: HttpReceiver) -> None:
    http_receiver.script = [(502, {})] * 5
    sleeps = Sleeps()
    sender(http_receiver.url, sleeps, max_attempts=6).send("msg_x", b"{}")
    assert sleeps == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_a_closed_port_is_retried_then_reported() -> None:
    sleeps = Sleeps()
    result = sender(f"http://127.0.0.1:{free_port()}/", sleeps, max_attempts=3).send("msg_x", b"{}")
    assert (result.ok, result.attempts, result.status, result.reason) == (False, 3, None, "connection")
    assert "ConnectionRefusedError" in result.detail
    assert sleeps == [1.0, 2.0]


def test_a_receiver_that_does_not_answer_times_out(http_receiver: HttpReceiver) -> None:
    http_receiver.hang = threading.Event()
    sleeps = Sleeps()
    result = sender(http_receiver.url, sleeps, timeout_s=0.2, max_attempts=2).send("msg_x", b"{}")
    assert (result.ok, result.attempts, result.reason) == (False, 2, "timeout")
    assert len(http_receiver.requests) == 2 and sleeps == [1.0]


def test_full_jitter_stays_within_the_backoff() -> None:
    waits = [full_jitter(4.0) for _ in range(200)]
    assert all(0.0 <= w <= 4.0 for w in waits) and len(set(waits)) > 100


def test_sender_refuses_a_bad_configuration() -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        WebhookSender("ftp://example.com/", SECRET)
    with pytest.raises(ValueError, match="max_attempts"):
        WebhookSender("http://example.com/", SECRET, max_attempts=0)
    with pytest.raises(ValueError, match="whsec_"):
        WebhookSender("http://example.com/", "not-a-whsec-secret")


def test_waits_go_through_the_jitter(http_receiver: HttpReceiver) -> None:
    http_receiver.script = [(503, {}), (503, {})]
    sleeps = Sleeps()
    asked: list[float] = []

    def quarter(delay_s: float) -> float:
        asked.append(delay_s)
        return delay_s / 4

    sender(http_receiver.url, sleeps, jitter=quarter).send("msg_x", b"{}")
    assert asked == [1.0, 2.0] and sleeps == [0.25, 0.5]
