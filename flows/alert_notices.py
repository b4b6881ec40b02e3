"""Sales-drop alert notices in Alertmanager's webhook format (version 4).

``AlertNotice`` is one notification about one drop alert (firing or resolved) with its
context; ``alertmanager_payload`` builds the JSON body Alertmanager's webhook receiver
sends, so receivers built for Alertmanager (DingTalk, WeCom and Slack bridges,
alertmanager-webhook-logger) take it as it is: one alert per notification, grouped by
``alertname`` and ``store``. ``send_alert`` sends one with ``connectors.webhooks`` (signed,
retried, idempotent by its ``message_id``: the fingerprint and status, the same on a replay).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from connectors.webhooks import Delivery, WebhookSender
from flows.drop_context import Context
from flows.drop_detector import AlertFingerprint, DropEvent

ALERTNAME = "StoreSalesDrop"
ZERO_TIME = "0001-01-01T00:00:00Z"
"""Go's zero ``time.Time``: Alertmanager's ``endsAt`` of an alert that has not ended."""

Status = Literal["firing", "resolved"]
Severity = Literal["warning", "critical"]


@dataclass(frozen=True)
class AlertNotice:
    """One notification about one drop alert: what ``alertmanager_payload`` needs.

    ``starts_at_ms`` is when the drop began (the fingerprint's first bucket, usually);
    ``ends_at_ms`` is when it was resolved, ``None`` while firing. The context numbers are
    those of ``flows.drop_context.Context``; ``None`` is left out of the annotations.

    >>> AlertNotice(AlertFingerprint("S1", 0), "M1", "resolved", 0)
    Traceback (most recent call last):
    ValueError: alert drop:S1:0: a resolved notice needs ends_at_ms >= starts_at_ms, got None
    """

    fingerprint: AlertFingerprint
    merchant_id: str
    status: Status
    starts_at_ms: int
    ends_at_ms: int | None = None
    severity: Severity = "warning"
    summary: str = ""
    description: str = ""
    expected: float | None = None
    actual: int | None = None
    drop_pct: float | None = None
    footfall_ratio: float | None = None
    last_sale_ts: int | None = None
    cause: str = "unknown"

    def __post_init__(self) -> None:
        name = self.fingerprint.format()
        if self.status not in ("firing", "resolved"):
            raise ValueError(f"alert {name}: status must be 'firing' or 'resolved', got {self.status!r}")
        if self.status == "firing" and self.ends_at_ms is not None:
            raise ValueError(f"alert {name}: a firing notice has no ends_at_ms, got {self.ends_at_ms}")
        if self.status == "resolved" and (self.ends_at_ms is None or self.ends_at_ms < self.starts_at_ms):
            raise ValueError(f"alert {name}: a resolved notice needs ends_at_ms >= starts_at_ms, got {self.ends_at_ms}")

    @property
    def store_id(self) -> str:
        return self.fingerprint.store_id

    @classmethod
    def from_event(
        cls,
        event: DropEvent,
        context: Context,
        *,
        merchant_id: str,
        severity: Severity = "warning",
        began_ms: int | None = None,
    ) -> AlertNotice:
        """The notice of a ``DropAlerter`` event, with the ``DropContext`` of its window.
        ``began_ms``: when the drop began (the detector's excursion), if known; else the
        fingerprint's first bucket.

        A resolved notice should carry the context (and so the ``cause`` label) its firing
        carried: receivers that match labels would otherwise see two different alerts.
        """
        fp = event.fingerprint
        began = fp.start_ms if began_ms is None else min(began_ms, fp.start_ms)
        summary = f"Sales at store {fp.store_id} are {context.drop_pct:g}% below expected"
        if event.kind == "firing":
            minutes = max(0, event.ts_ms - began) // 60_000
            summary += f" for {minutes} minutes" if minutes else ""
        description = f"{context.actual} sales where {context.expected:.1f} were expected. {explain_cause(context)}"
        return cls(
            fingerprint=fp,
            merchant_id=merchant_id,
            status=event.kind,
            starts_at_ms=began,
            ends_at_ms=event.ts_ms if event.kind == "resolved" else None,
            severity=severity,
            summary=summary,
            description=description,
            expected=context.expected,
            actual=context.actual,
            drop_pct=context.drop_pct,
            footfall_ratio=context.footfall_ratio,
            last_sale_ts=context.last_sale_ts,
            cause=context.cause,
        )


def explain_cause(context: Context) -> str:
    """What the cause means to a merchant, with the footfall behind it.

    >>> ctx = Context(60.0, 30, 50.0, 400, 400.0, 1.0, None, ("wechat",), "payment:wechat")
    >>> print(explain_cause(ctx))  # doctest: +NORMALIZE_WHITESPACE
    No wechat sales while other payment methods kept selling:
    a wechat payment outage is likely (footfall 1x its normal).
    >>> explain_cause(Context(60.0, 30, 50.0, 150, 400.0, 0.375, None, (), "traffic"))
    'Footfall is 0.375x its normal: fewer shoppers are coming in (a traffic problem).'
    >>> explain_cause(Context(60.0, 30, 50.0, 400, 400.0, 1.0, None, (), "conversion"))
    'Footfall is normal (1x), so shoppers are coming in and not buying (a conversion problem).'
    """
    ratio = context.footfall_ratio
    if context.silent_methods:
        methods = " and ".join(context.silent_methods)
        text = f"No {methods} sales while other payment methods kept selling: a {methods} payment outage is likely"
        return text + (f" (footfall {ratio:g}x its normal)." if ratio is not None else ".")
    if context.cause == "traffic" and ratio is not None:
        return f"Footfall is {ratio:g}x its normal: fewer shoppers are coming in (a traffic problem)."
    if ratio is not None:
        return f"Footfall is normal ({ratio:g}x), so shoppers are coming in and not buying (a conversion problem)."
    return "Footfall is not measured at this store, so the cause is not known."


def rfc3339(ts_ms: int) -> str:
    """Epoch milliseconds as RFC 3339 in UTC, as Go writes a ``time.Time`` (no zero fraction).

    >>> rfc3339(1767225600000), rfc3339(1767225600250)
    ('2026-01-01T00:00:00Z', '2026-01-01T00:00:00.25Z')
    """
    seconds, ms = divmod(ts_ms, 1000)
    text = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{ms:03d}".rstrip("0") if ms else "") + "Z"


def fingerprint_hex(fingerprint: AlertFingerprint) -> str:
    """The 16 hex digits Alertmanager puts in ``fingerprint``: here the first 8 bytes of the
    SHA-256 of the ``AlertFingerprint`` text, so the same on every process and restart.

    >>> fingerprint_hex(AlertFingerprint("S1", 1767225600000))
    '96e83037a2f78db1'
    """
    return hashlib.sha256(fingerprint.format().encode()).hexdigest()[:16]


def message_id(notice: AlertNotice) -> str:
    """The ``webhook-id`` of a notice: its fingerprint and status, the same on a replay.

    >>> message_id(AlertNotice(AlertFingerprint("S1", 1767225600000), "M1", "firing", 1767225600000))
    'msg_96e83037a2f78db1_firing'
    """
    return f"msg_{fingerprint_hex(notice.fingerprint)}_{notice.status}"


def _label_set(labels: Mapping[str, str]) -> str:
    """A label set as Prometheus prints it (``model.LabelSet.String``), for ``groupKey``."""
    return "{" + ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(labels.items())) + "}"


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def alertmanager_payload(
    notice: AlertNotice, *, receiver: str, external_url: str = "", generator_url: str = ""
) -> dict[str, Any]:
    """The Alertmanager webhook (version 4) JSON of one notice, as a dict for ``encode_body``.

    Labels (Prometheus names): ``alertname`` (``StoreSalesDrop``), ``store``, ``merchant``,
    ``severity``, ``cause``. Annotations are strings: ``summary``, ``description``,
    ``alert_id`` (the ``AlertFingerprint`` text) and the context numbers that are known
    (``expected``, ``actual``, ``drop_pct``, ``footfall_ratio``, ``last_sale`` as RFC 3339).
    ``groupLabels`` are ``alertname`` and ``store``; ``groupKey`` is ``{}:`` and their label
    set, as Alertmanager writes it for a route at the root. ``external_url`` stands for
    Alertmanager's own URL and ``generator_url`` for the rule's (a dashboard, say).
    """
    labels = {
        "alertname": ALERTNAME,
        "cause": notice.cause,
        "merchant": notice.merchant_id,
        "severity": notice.severity,
        "store": notice.store_id,
    }
    annotations = {"alert_id": notice.fingerprint.format()}
    if notice.summary:
        annotations["summary"] = notice.summary
    if notice.description:
        annotations["description"] = notice.description
    numbers = {
        "expected": notice.expected,
        "actual": notice.actual,
        "drop_pct": notice.drop_pct,
        "footfall_ratio": notice.footfall_ratio,
    }
    annotations.update({k: _number(v) for k, v in numbers.items() if v is not None})
    if notice.last_sale_ts is not None:
        annotations["last_sale"] = rfc3339(notice.last_sale_ts)
    group_labels = {"alertname": ALERTNAME, "store": notice.store_id}
    alert = {
        "status": notice.status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": rfc3339(notice.starts_at_ms),
        "endsAt": ZERO_TIME if notice.ends_at_ms is None else rfc3339(notice.ends_at_ms),
        "generatorURL": generator_url,
        "fingerprint": fingerprint_hex(notice.fingerprint),
    }
    return {
        "version": "4",
        "groupKey": "{}:" + _label_set(group_labels),
        "truncatedAlerts": 0,
        "status": notice.status,
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": dict(labels),
        "commonAnnotations": dict(annotations),
        "externalURL": external_url,
        "alerts": [alert],
    }


def encode_body(payload: Mapping[str, Any]) -> bytes:
    """The bytes that are sent and signed: compact UTF-8 JSON, keys in the order given."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def send_alert(
    sender: WebhookSender, notice: AlertNotice, *, external_url: str = "", generator_url: str = ""
) -> Delivery:
    """Send ``notice`` as an Alertmanager webhook with ``message_id(notice)`` as its id."""
    payload = alertmanager_payload(
        notice, receiver=sender.receiver, external_url=external_url, generator_url=generator_url
    )
    return sender.send(message_id(notice), encode_body(payload))
