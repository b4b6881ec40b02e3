"""Outgoing webhooks: Standard Webhooks signing and a retrying sender.

Writes one HTTP POST per message to a receiver URL; reads only the receiver's status line
(and ``Retry-After``). Keeps no state. The sales-drop alerts' body is
``flows.alert_notices`` (Alertmanager's webhook format); any JSON body can be sent.

- ``sign`` and ``verify`` are the two ends of Standard Webhooks (standardwebhooks.com):
  ``webhook-id``, ``webhook-timestamp`` (epoch seconds) and ``webhook-signature``
  (``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``), with a ``whsec_<base64>``
  secret or raw bytes.
- ``WebhookSender.send(msg_id, body)`` POSTs with those headers and retries what can
  succeed later (connection errors, timeouts, 429 and 5xx) with capped exponential backoff
  and full jitter, honouring ``Retry-After`` up to a cap; it returns a ``Delivery`` saying
  what happened, and never raises for a failed delivery.

Delivery guarantee: at-least-once when the caller retries what is not delivered, and
idempotent by ``webhook-id``. A message's id is the caller's and must be deterministic (an
alert notice's is its fingerprint and status, ``flows.alert_notices.message_id``), the
same on every attempt and on a replay after a crash, so a receiver
that remembers ids drops duplicates; the timestamp and signature are made afresh for each
attempt (a receiver checks the timestamp against a tolerance window). Exactly-once
across restarts is the caller's: the dataflow records delivered ids in its state and
skips them on a replay; a ``Delivery`` that is not ``ok`` goes to the dead-letter topic
with its ``reason`` (``REASONS``, a small fixed set) and is not retried in a loop.

What to do on each outcome: ``rejected`` (a 4xx other than 429, or a redirect) means the
URL, secret or payload is wrong for this receiver: fix the configuration, then replay the
dead letters; ``tls`` means the receiver's certificate does not verify; ``http_5xx``,
``http_429``, ``timeout`` and ``connection`` mean the receiver stayed unavailable for
``max_attempts`` attempts.

>>> secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the example of standardwebhooks.com
>>> sig = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
>>> sig
'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE='
>>> headers = {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330",
...            "webhook-signature": sig}
>>> verify(secret, headers, b'{"test": 2432232314}', now_s=1614265400)
>>> verify(secret, headers, b'{"test": 1}', now_s=1614265400)
Traceback (most recent call last):
connectors.webhooks.SignatureError: webhook-signature: no v1 signature matches the body
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import hmac
import http.client
import logging
import random
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, get_args
from urllib.parse import urlsplit

from state.redis import Backoff
from storepulse import __version__
from storepulse.errors import StorepulseError
from storepulse.metrics import WEBHOOK_ATTEMPT_FAILURES, WEBHOOK_DELIVERIES

log = logging.getLogger(__name__)


SIGNATURE_TOLERANCE_S = 300
"""How far a ``webhook-timestamp`` may be from the receiver's clock (Standard Webhooks: 5 min)."""
Reason = Literal["delivered", "rejected", "tls", "http_429", "http_5xx", "timeout", "connection"]
REASONS: tuple[Reason, ...] = get_args(Reason)
"""Every ``Delivery.reason``: the first means delivered, the others why it was given up."""


class SignatureError(StorepulseError):
    """A webhook's signature headers do not prove it came from the holder of the secret."""


# ---- Standard Webhooks signatures -----------------------------------------------------------


def parse_secret(secret: str | bytes) -> bytes:
    """The HMAC key of a secret: ``whsec_<base64>`` text is decoded, bytes are used as they are.

    >>> parse_secret("whsec_c2VjcmV0"), parse_secret(b"secret")
    (b'secret', b'secret')
    """
    if isinstance(secret, bytes):
        key = secret
    elif secret.startswith("whsec_"):
        try:
            key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except binascii.Error:
            raise ValueError("webhook secret: the text after 'whsec_' is not base64") from None
    else:
        raise ValueError("webhook secret: give 'whsec_<base64>' text (e.g. 'whsec_' + `openssl rand -base64 32`)")
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def sign(secret: str | bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: ``v1,`` and the base64 HMAC-SHA256 of
    ``{msg_id}.{timestamp}.{body}`` keyed with ``parse_secret(secret)``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(parse_secret(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now_s: float,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
) -> None:
    """The receiver's check: return if ``headers`` sign ``body`` with ``secret`` within
    ``tolerance_s`` of ``now_s``, else raise ``SignatureError`` saying what is wrong.

    Header names are matched case-insensitively; ``webhook-signature`` may hold several
    space-separated signatures (a secret being rotated), of which one must match; each is
    compared in constant time.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id, ts_text, signatures = (lower[h] for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    except KeyError as missing:
        raise SignatureError(f"{missing.args[0]}: header missing") from None
    try:
        timestamp = int(ts_text)
    except ValueError:
        raise SignatureError(f"webhook-timestamp: {ts_text!r} is not epoch seconds") from None
    if abs(now_s - timestamp) > tolerance_s:
        raise SignatureError(
            f"webhook-timestamp: {timestamp} is {now_s - timestamp:+.0f} s from now, "
            f"outside the tolerance of {tolerance_s:g} s (a replayed or delayed message, or a clock off)"
        )
    expected = sign(secret, msg_id, timestamp, body).encode()
    if not any(hmac.compare_digest(s.encode(), expected) for s in signatures.split() if s.startswith("v1,")):
        raise SignatureError("webhook-signature: no v1 signature matches the body")


# ---- the sender -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """What became of one message: delivered (``ok``) or why not (``reason``, one of
    ``REASONS``), after how many attempts, the last HTTP status (``None`` if no response)
    and a line for logs and dead letters (``detail``)."""

    msg_id: str
    ok: bool
    attempts: int
    status: int | None
    reason: Reason
    detail: str


def full_jitter(delay_s: float) -> float:
    """A uniformly random wait in [0, delay_s] ("full jitter")."""
    return random.uniform(0.0, delay_s)


class _Failed(Exception):
    def __init__(self, reason: Reason, detail: str, status: int | None = None, retry_after_s: float | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.status, self.retry_after_s = reason, detail, status, retry_after_s


class WebhookSender:
    """POSTs signed messages to one receiver URL; see the module docstring.

    ``receiver`` names the receiver (the payload's ``receiver`` and the metrics label).
    Each attempt opens a connection with ``timeout_s`` on the connect and on every read;
    ``max_attempts`` bounds the attempts of one message. Between attempts it waits
    ``jitter(backoff.delay_s(n))`` (full jitter of a capped exponential), or the
    receiver's ``Retry-After`` (seconds or an HTTP date) when given, at most
    ``retry_after_cap_s``. ``sleep`` and ``clock`` (epoch seconds, for the timestamp) are
    injectable so tests count instead of waiting. Redirects are not followed (a POST
    should not move): a 3xx is ``rejected``. Thread-compatible, not thread-safe.
    """

    def __init__(
        self,
        url: str,
        secret: str | bytes,
        *,
        receiver: str = "storepulse",
        timeout_s: float = 5.0,
        max_attempts: int = 6,
        backoff: Backoff = Backoff(base_s=1.0, cap_s=60.0),  # noqa: B008 - frozen, so shared safely
        retry_after_cap_s: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[float], float] = full_jitter,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook URL {url!r}: expected http:// or https:// with a host")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        if not (timeout_s > 0 and retry_after_cap_s >= 0):
            raise ValueError(f"timeout_s must be > 0 and retry_after_cap_s >= 0, got {timeout_s}, {retry_after_cap_s}")
        self._key = parse_secret(secret)
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._shown = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"
        self.receiver = receiver
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._retry_after_cap_s = retry_after_cap_s
        self._sleep, self._clock, self._jitter = sleep, clock, jitter
        self._ssl = ssl_context if ssl_context is not None else (ssl.create_default_context() if self._https else None)

    def send(self, msg_id: str, body: bytes) -> Delivery:
        """POST ``body`` as ``msg_id`` until a 2xx, a failure not worth retrying, or
        ``max_attempts``; never raises for a failed delivery."""
        failure: _Failed | None = None
        for attempt in range(1, self._max_attempts + 1):
            if failure is not None:
                self._sleep(self._wait_s(attempt - 2, failure))
            try:
                status = self._post(msg_id, body)
            except _Failed as failed:
                failure = failed
                WEBHOOK_ATTEMPT_FAILURES.labels(self.receiver, failed.reason).inc()
                final = failed.reason in ("rejected", "tls") or attempt == self._max_attempts
                log.warning(
                    "webhook %s to %s: attempt %d of %d failed: %s; %s",
                    msg_id, self._shown, attempt, self._max_attempts, failed.detail,
                    "giving up" if final else "retrying",
                )  # fmt: skip
                if final:
                    break
                continue
            WEBHOOK_DELIVERIES.labels(self.receiver, "delivered").inc()
            return Delivery(msg_id, True, attempt, status, "delivered", f"HTTP {status}")
        assert failure is not None
        WEBHOOK_DELIVERIES.labels(self.receiver, failure.reason).inc()
        detail = f"{failure.detail} (attempt {attempt} of {self._max_attempts}, {self._shown})"
        return Delivery(msg_id, False, attempt, failure.status, failure.reason, detail)

    def _wait_s(self, retry: int, failure: _Failed) -> float:
        if failure.retry_after_s is not None:
            return min(failure.retry_after_s, self._retry_after_cap_s)
        return self._jitter(self._backoff.delay_s(retry))

    def _post(self, msg_id: str, body: bytes) -> int:
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"storepulse/{__version__}",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._key, msg_id, timestamp, body),
        }
        conn: http.client.HTTPConnection
        if self._https:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout_s, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)
        try:
            conn.request("POST", self._path, body=body, headers=headers)
            response = conn.getresponse()
            response.read(65536)  # a receiver's answer is not ours to keep; bounded
            status, retry_after = response.status, response.getheader("Retry-After")
        except ssl.SSLCertVerificationError as exc:
            raise _Failed("tls", f"TLS certificate did not verify: {exc.verify_message}") from None
        except TimeoutError:
            raise _Failed("timeout", f"no answer within {self._timeout_s:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise _Failed("connection", f"{type(exc).__name__}: {exc}") from None
        finally:
            conn.close()
        if 200 <= status < 300:
            return status
        text = f"HTTP {status} {http.client.responses.get(status, '')}".rstrip()
        if status == 429 or status >= 500:
            reason: Reason = "http_429" if status == 429 else "http_5xx"
            raise _Failed(reason, text, status, self._retry_after_s(retry_after))
        raise _Failed("rejected", text + " (not retried: fix the URL, secret or payload)", status)

    def _retry_after_s(self, value: str | None) -> float | None:
        """``Retry-After`` as seconds to wait: delta-seconds or an HTTP date; None if absent or unreadable."""
        if not value:
            return None
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        return max(0.0, when.timestamp() - self._clock())
