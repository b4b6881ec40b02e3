"""The catalog in Redis: written by ``storepulse catalog load``, watched by every engine worker.

Keys (the cross-service interface; the hash tag ``{catalog}`` keeps both in one Cluster slot):

- ``sp:{catalog}:json``: the catalog as JSON (``connectors.catalog.Catalog.to_json``).
- ``sp:{catalog}:version``: its content hash (``Catalog.version``, 16 hex digits).

``CatalogStore.save`` writes both in one MULTI, so a reader never sees the JSON of one
version under the other's version; saving an equal catalog rewrites the same bytes, so
it is idempotent and the version moves only when the content changes. ``load`` reads
both with one MGET.

``CatalogWatcher.current()`` is meant for the hot path: it returns the cached catalog
and, at most once per ``refresh_s``, GETs the version key (a few bytes) and reloads only
when it changed. Once it holds a catalog it never raises: if Redis is unreachable it
keeps serving the cached one and logs one warning per outage. Every failed check is
counted in ``storepulse_catalog_check_failures_total{reason="unreachable"|"invalid"}``.

>>> from connectors.catalog import Catalog
>>> CatalogStore.keys()
('sp:{catalog}:json', 'sp:{catalog}:version')
>>> Catalog().version == Catalog().version
True
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import msgspec
import redis
from redis.exceptions import RedisClusterException

from connectors.catalog import Catalog
from state.redis import Client
from storepulse import metrics
from storepulse.errors import BackendUnavailable, CatalogError, StorepulseError

log = logging.getLogger(__name__)

JSON_KEY = "sp:{catalog}:json"
VERSION_KEY = "sp:{catalog}:version"

_LOAD_HINT = "run `storepulse catalog load FILE.yaml` against this Redis"


class CatalogStore:
    """Reads and writes the one catalog of a Redis database."""

    def __init__(self, client: Client) -> None:
        self.client = client

    @staticmethod
    def keys() -> tuple[str, str]:
        return JSON_KEY, VERSION_KEY

    def save(self, catalog: Catalog) -> str:
        """Validate ``catalog``, write JSON and version in one MULTI, return the version."""
        catalog.validate()
        version = catalog.version
        pipe = self.client.pipeline(transaction=True)
        pipe.set(JSON_KEY, catalog.to_json())
        pipe.set(VERSION_KEY, version)
        pipe.execute()
        return version

    def version(self) -> str | None:
        """The version in Redis, or None if no catalog was ever saved there."""
        raw = self.client.get(VERSION_KEY)
        return None if raw is None else _text(raw)

    def load(self) -> Catalog | None:
        """The catalog in Redis (validated), or None if none was saved."""
        loaded = self.load_versioned()
        return None if loaded is None else loaded[0]

    def load_versioned(self) -> tuple[Catalog, str] | None:
        """The catalog and the version stored with it, read together (one MGET)."""
        raw_json, raw_version = self.client.mget([JSON_KEY, VERSION_KEY])
        if raw_json is None:
            return None
        if isinstance(raw_json, str):  # a client made with decode_responses=True
            raw_json = raw_json.encode()
        try:
            catalog = Catalog.from_json(raw_json)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CatalogError(f"the catalog in Redis ({JSON_KEY}) is invalid: {exc}; "
                               f"{_LOAD_HINT} to replace it") from exc
        catalog.validate()
        version = catalog.version if raw_version is None else _text(raw_version)
        return catalog, version


class CatalogWatcher:
    """The current catalog of one engine worker, re-checked in Redis every ``refresh_s``.

    ``source`` is a client, or a zero-argument factory called (again, after a failure)
    when a client is needed, so a watcher can be built before its worker connects.
    ``clock`` (monotonic seconds) is injectable for tests.

    Cost: between checks ``current()`` makes no Redis call; a check is one GET of a few
    bytes, plus one MGET when the version changed. A check blocks the caller for at most
    the client's socket timeout times its retries while Redis is unreachable, so give
    the watcher a client with a short timeout, e.g. ``connect(url, timeout_s=0.5,
    retries=0)``.

    Threads: one watcher per bytewax worker is the intended use, but sharing one across
    the worker threads of a process is safe: a due check is taken by one thread (a
    non-blocking lock) while the others keep getting the cached catalog.
    """

    def __init__(
        self,
        source: Client | Callable[[], Client],
        refresh_s: float = 2.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(source, redis.Redis | redis.RedisCluster):
            self._client: Client | None = source
            self._factory: Callable[[], Client] | None = None
        else:
            self._client, self._factory = None, source
        self.refresh_s = refresh_s
        self._clock = clock
        self._catalog: Catalog | None = None
        self._version: str | None = None
        self._next_check = float("-inf")
        self._outage = False
        self._failure: StorepulseError | None = None
        self._bad_version: str | None = None
        self._checking = threading.Lock()

    @property
    def version(self) -> str | None:
        """Version of the catalog being served (None before the first load)."""
        return self._version

    def current(self) -> Catalog:
        """The current catalog; checks Redis for a new version at most once per refresh_s.

        Raises CatalogError (or BackendUnavailable if Redis cannot be reached) only while
        no catalog was ever loaded; the failure is remembered until the next check.
        """
        now = self._clock()
        if self._catalog is None:  # nothing to serve yet: wait for a check in progress
            with self._checking:
                self._check_if_due(now)
        elif now >= self._next_check and self._checking.acquire(blocking=False):
            try:
                self._check_if_due(now)
            finally:
                self._checking.release()
        catalog = self._catalog
        if catalog is None:
            assert self._failure is not None
            raise type(self._failure)(*self._failure.args)  # a fresh traceback per raise
        return catalog

    def _check_if_due(self, now: float) -> None:
        if now >= self._next_check:
            self._next_check = now + self.refresh_s
            self._check()

    def _check(self) -> None:
        version: str | None = None
        try:
            client = self._connected()
            raw = client.get(VERSION_KEY)
            version = None if raw is None else _text(raw)
            if version is not None and version not in (self._version, self._bad_version):
                loaded = CatalogStore(client).load_versioned()
                if loaded is None:
                    version = None  # the JSON key is gone: as good as no catalog
                else:
                    self._install(*loaded)
        except CatalogError as exc:
            metrics.CATALOG_CHECK_FAILURES.labels("invalid").inc()
            self._recovered()
            self._bad_version = version
            if self._catalog is None:
                self._failure = exc
            else:
                log.error("catalog version %s in Redis is invalid; still serving %s: %s",
                          version, self._version, exc)
            return
        except (redis.RedisError, RedisClusterException, OSError, BackendUnavailable) as exc:
            metrics.CATALOG_CHECK_FAILURES.labels("unreachable").inc()
            self._unreachable(exc)
            return
        self._recovered()
        if version is None and self._catalog is None:
            self._failure = CatalogError(
                f"no catalog in Redis ({VERSION_KEY} is missing): {_LOAD_HINT}"
            )

    def _connected(self) -> Client:
        if self._client is None:
            assert self._factory is not None
            self._client = self._factory()
        return self._client

    def _install(self, catalog: Catalog, version: str) -> None:
        previous, self._catalog, self._version = self._version, catalog, version
        self._failure = None
        metrics.CATALOG_VERSION.set(time.time())
        log.info("catalog %s loaded (was %s): %d malls, %d stores, %d sensors, %d campaigns",
                 version, previous, len(catalog.malls), len(catalog.stores),
                 len(catalog.sensors), len(catalog.campaigns))

    def _unreachable(self, exc: Exception) -> None:
        if self._factory is not None and self._client is not None:
            self._client.close()
            self._client = None  # make a fresh client on the next check
        if not self._outage:
            self._outage = True
            if self._catalog is not None:
                log.warning("Redis unreachable while checking the catalog version; still "
                            "serving catalog %s: %s", self._version, exc)
            else:
                log.warning("Redis unreachable and no catalog loaded yet: %s", exc)
        if self._catalog is None:
            self._failure = BackendUnavailable(
                f"cannot read the catalog from Redis: {exc}; check STOREPULSE_REDIS_URL and "
                "that Redis is running"
            )

    def _recovered(self) -> None:
        if self._outage:
            self._outage = False
            log.info("Redis reachable again; catalog checks resumed")


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw
