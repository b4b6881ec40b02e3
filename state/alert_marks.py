"""Which alert notices were delivered, and where: the marks that make alert delivery
exactly once across restarts (``flows.alert_outbox``).

Writes and reads one small hash per notice; nothing else. A notice is named by its
``flows.alert_notices.message_id`` (its fingerprint and status, the same on every replay),
a channel is ``kafka`` (the alerts topic) or ``webhook`` (the signed webhook).
``delivered`` reads the marks of a batch in one non-transactional pipeline (one round trip
to a single server, one per node on a Cluster); ``mark`` writes a batch of marks the same
way. Marking is idempotent: marking again only moves the time and the expiry forward, so a
replay changes nothing a reader acts on.

Key layout (the cross-service interface). The message id is in literal braces, a Redis
Cluster hash tag, so each key lives whole in one slot:

``sp:alert:{<message_id>}`` (hash, expires ``MARK_TTL_S`` after its last mark: 90 days)
    One field per channel the notice was handled on, ``kafka`` and ``webhook``; the value is
    when it was marked, epoch milliseconds UTC as a decimal integer (``state.hashes``
    encoding). A webhook that was given up and dead-lettered is marked too (handled), so a
    replay does not send it again; the dead-letter topic says it failed.

90 days is far longer than any replay (a replay goes back to the last snapshot, seconds to
minutes) and than any alert stays open, and short enough that the keys of a busy mall stay
in the thousands.

>>> alert_mark_key("msg_96e83037a2f78db1_firing")
'sp:alert:{msg_96e83037a2f78db1_firing}'
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, get_args

from state.redis import Client

Channel = Literal["kafka", "webhook"]
CHANNELS: tuple[Channel, ...] = get_args(Channel)
MARK_TTL_S = 90 * 86400


def alert_mark_key(msg_id: str) -> str:
    """The key of a notice's marks."""
    if not msg_id or "{" in msg_id or "}" in msg_id:
        raise ValueError(f"alert message id {msg_id!r}: expected non-empty text without braces")
    return f"sp:alert:{{{msg_id}}}"


class AlertMarks:
    """Reads and writes the marks of the module docstring. Raises redis errors (each call is
    safe to retry whole)."""

    def __init__(self, client: Client, *, ttl_s: int = MARK_TTL_S) -> None:
        if ttl_s < 1:
            raise ValueError(f"ttl_s must be >= 1, got {ttl_s}")
        self.client = client
        self.ttl_s = ttl_s

    def delivered(self, msg_ids: Sequence[str]) -> dict[str, frozenset[Channel]]:
        """The channels each of ``msg_ids`` was marked on (an empty set: none), one pipeline."""
        unique = list(dict.fromkeys(msg_ids))
        if not unique:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for msg_id in unique:
            pipe.hmget(alert_mark_key(msg_id), list(CHANNELS))
        marks: dict[str, frozenset[Channel]] = {}
        for msg_id, values in zip(unique, pipe.execute(), strict=True):
            marks[msg_id] = frozenset(c for c, v in zip(CHANNELS, values, strict=True) if v is not None)
        return marks

    def mark(self, marks: Iterable[tuple[str, Channel]], at_ms: int) -> int:
        """Mark each ``(msg_id, channel)`` as handled at ``at_ms`` and (re)start its key's
        expiry, one pipeline; returns how many marks were sent."""
        by_key: dict[str, dict[str, str]] = {}
        for msg_id, channel in marks:
            if channel not in CHANNELS:
                raise ValueError(f"alert mark of {msg_id}: channel must be one of {CHANNELS}, got {channel!r}")
            by_key.setdefault(alert_mark_key(msg_id), {})[channel] = str(at_ms)
        if not by_key:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for key, fields in by_key.items():
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]  # redis-py's mapping type is invariant
            pipe.expire(key, self.ttl_s)
        pipe.execute()
        return sum(len(fields) for fields in by_key.values())
