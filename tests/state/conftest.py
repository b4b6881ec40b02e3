"""Count what a Redis client does against a server that is down, instead of timing it."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import redis.connection
import redis.retry


@dataclass
class RedisAttempts:
    """Connection attempts made and backoff waits asked for (recorded, not slept)."""

    connects: int = 0
    sleeps: list[float] = field(default_factory=list)

    def sleep(self, seconds: float) -> None:
        # a client retrying without end would otherwise hang the test
        assert len(self.sleeps) < 50, f"still backing off after {len(self.sleeps)} waits"
        self.sleeps.append(seconds)

    def take(self) -> tuple[int, list[float]]:
        """The attempts and waits since the last ``take``, and start counting afresh."""
        counted = self.connects, self.sleeps
        self.connects, self.sleeps = 0, []
        return counted


@pytest.fixture
def redis_attempts(monkeypatch: pytest.MonkeyPatch) -> RedisAttempts:
    """Counts every TCP connect redis-py makes and replaces its retry backoff sleep.

    redis-py opens a TCP socket in ``Connection._connect`` and waits between retries with
    ``redis.retry.sleep`` (``from time import sleep``); there is no public hook for either.
    """
    attempts = RedisAttempts()
    connect_socket = redis.connection.Connection._connect

    def counting_connect(self: redis.connection.Connection) -> object:
        attempts.connects += 1
        return connect_socket(self)

    monkeypatch.setattr(redis.connection.Connection, "_connect", counting_connect)
    monkeypatch.setattr(redis.retry, "sleep", attempts.sleep)
    return attempts
