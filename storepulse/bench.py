"""``storepulse bench profile-latency``: from a member's sale entering Kafka to that
member's profile in Redis, measured from outside an engine that is already running.

Reads the catalog from Redis (``STOREPULSE_REDIS_URL``) and writes member sales to
``STOREPULSE_TOPIC_TRANSACTIONS`` on ``STOREPULSE_KAFKA_BOOTSTRAP`` at ``rate`` sales/s,
each one a sale of a real store of the catalog (its merchant, its currency), stamped
``ts`` = the wall clock when it is produced, by a member of its own
(``bench-<run>-<n>``, so the profile the engine writes for it has ``as_of_ts`` = that
``ts``). It learns when each profile lands from Redis keyspace notifications: it turns
on the two flags it needs (``K``: keyspace channel, ``h``: hash commands; the ones
already set are kept, and the setting is put back afterwards), subscribes to
``__keyspace@*__:sp:member:{bench-<run>-*}:profile`` and, on each ``hset``, reads the
profile's ``as_of_ts``: a sale is observed when its member's stored ``as_of_ts`` is at
least its ``ts``. Latency = the time the notification arrived minus the time the sale
was handed to the Kafka producer (librdkafka's message timestamp, linger included).

A warm-up of ``warmup`` sales goes first (the first produce to a broker, Tansu above
all, and the engine's first read can take seconds) and must be observed in full before
the ``sales`` measured ones start; it is not counted. After the last measured sale the
bench waits at most ``timeout_s`` for stragglers; those not observed by then are
reported as ``missing`` (and logged), never dropped from the count.

The default rate is the demo's member-sale rate (``DEMO_MEMBER_SALE_RATE``). Writes
real profiles of made-up members into the engine's Redis: run it on a test or staging
deployment. Needs one Redis server (keyspace notifications are per node): a
``redis+cluster://`` URL is refused.

>>> report = LatencyReport(sent=6, observed=5, latencies_s=(0.5, 0.1, 0.3, 0.2, 0.4), rate=50.0,
...                        target_rate=50.0, seconds=1.5).to_json()
>>> report["missing"], report["p50_s"], report["p99_s"]  # nearest rank: values that were measured
(1, 0.3, 0.5)
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from storepulse.errors import BackendUnavailable, CatalogError, ConfigError
from storepulse.settings import Settings

log = logging.getLogger("storepulse.bench")

DEMO_MEMBER_SALE_RATE = 67.0
"""Member sales per wall second of ``storepulse demo`` (scenario ``demo``, seed 7, speedup
4000): 706 member sales in 11.7 simulated hours of trading, 42,137 s / 4000 = 10.5 s of wall
time. Its busiest hour runs at 93/s. ``test_bench_latency`` recomputes it."""
DEFAULT_SALES = 2000
DEFAULT_WARMUP = 50
DEFAULT_TIMEOUT_S = 30.0
NEEDED_FLAGS = "Kh"  # keyspace events (K) of hash commands (h): the engine's HSET of a profile
_FLAGS = "notify-keyspace-events"
_FLUSH_EVERY = 500


@dataclass(frozen=True)
class LatencyReport:
    """What one measurement found. ``latencies_s``: one per observed sale, in seconds;
    ``rate``: measured sales produced per second; ``seconds``: from the first measured
    sale to the last observation (or the end of the straggler wait)."""

    sent: int
    observed: int
    latencies_s: tuple[float, ...]
    rate: float
    target_rate: float
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """The report's JSON line; p50 and p99 are nearest-rank (numpy's ``inverted_cdf``:
        the smallest latency with at least that share of them at or below it)."""
        import numpy as np  # not at module import: the CLI reads this module's defaults

        lat = self.latencies_s
        quantiles = np.quantile(lat, [0.5, 0.99], method="inverted_cdf").tolist() if lat else [None, None]
        p50, p99 = (None if v is None else round(v, 4) for v in quantiles)
        return {
            "sent": self.sent,
            "observed": self.observed,
            "missing": self.sent - self.observed,
            "p50_s": p50,
            "p99_s": p99,
            "max_s": round(max(lat), 4) if lat else None,
            "rate": round(self.rate, 2),
            "target_rate": self.target_rate,
            "seconds": round(self.seconds, 2),
        }


class ProfileWatch:
    """Which expected sales have reached their member's profile in Redis, and when.

    ``expect`` a sale before producing it; a subscriber thread reads the keyspace
    notifications of the run's members and marks a sale observed at the arrival of the
    first ``hset`` after which the stored ``as_of_ts`` is >= the sale's ``ts``.
    """

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.pattern = f"__keyspace@*__:sp:member:{{{prefix}*}}:profile"
        self._pending: dict[str, tuple[int, float]] = {}  # member -> (ts ms, sent at: epoch s)
        self._latency: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pubsub = client.pubsub()
        self._pubsub.psubscribe(self.pattern)
        # wait for the subscription to be confirmed: nothing published before counts
        deadline = time.monotonic() + 10
        while not self._confirmed():
            if time.monotonic() > deadline:
                raise BackendUnavailable(f"Redis did not confirm the subscription to {self.pattern!r} in 10 s")
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="bench-profile-watch", daemon=True)
        self._thread.start()

    def _confirmed(self) -> bool:
        message = self._pubsub.get_message(timeout=0.5)
        return bool(message and message["type"] == "psubscribe")

    def expect(self, member_id: str, ts_ms: int, sent_at: float) -> None:
        with self._lock:
            self._pending[member_id] = (ts_ms, sent_at)

    def observed(self, members: Sequence[str]) -> dict[str, float]:
        """member -> latency (s) of those of ``members`` observed so far."""
        with self._lock:
            return {m: self._latency[m] for m in members if m in self._latency}

    def wait(self, members: Sequence[str], timeout_s: float) -> float:
        """Wait until every one of ``members`` is observed or ``timeout_s`` passes;
        the monotonic time it ended."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.raise_errors()
            now = time.monotonic()
            if len(self.observed(members)) == len(members) or now >= deadline:
                return now
            time.sleep(0.01)

    def raise_errors(self) -> None:
        if self._errors:
            raise BackendUnavailable(f"watching profiles in Redis failed: {self._errors[0]!r}") from self._errors[0]

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                message = self._pubsub.get_message(timeout=0.1)
                if message is None or message["type"] != "pmessage":
                    continue
                arrived = time.time()
                if message["data"] not in (b"hset", "hset"):
                    continue  # the engine's script DELs, then HSETs every field
                channel = message["channel"]
                channel = channel.decode() if isinstance(channel, bytes) else channel
                key = channel.split("__:", 1)[1]
                member = key[key.index("{") + 1 : key.rindex("}")]
                with self._lock:
                    expected = self._pending.get(member)
                if expected is None:
                    continue
                as_of = self.client.hget(key, "as_of_ts")
                if as_of is not None and int(as_of) >= expected[0]:
                    with self._lock:
                        self._latency[member] = arrived - expected[1]
                        del self._pending[member]
        except BaseException as exc:  # surfaced to the producing thread by raise_errors
            self._errors.append(exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._pubsub.close()


def _enable_notifications(client: Any) -> str:
    """Add ``NEEDED_FLAGS`` to the server's notify-keyspace-events; the value before."""
    import redis

    try:
        before = str(client.config_get(_FLAGS).get(_FLAGS, ""))
        wanted = "".join(f for f in NEEDED_FLAGS if f not in before and not (f == "h" and "A" in before))
        if wanted:
            client.config_set(_FLAGS, before + wanted)
    except redis.ResponseError as exc:
        raise ConfigError(
            f"Redis refused CONFIG GET/SET {_FLAGS} ({exc}); on a managed Redis without CONFIG, "
            f"set {_FLAGS} to include {NEEDED_FLAGS!r} in the server's configuration"
        ) from None
    return before


def _restore_notifications(client: Any, before: str) -> None:
    """Put notify-keyspace-events back to ``before`` (if it was changed)."""
    if before != str(client.config_get(_FLAGS).get(_FLAGS, "")):
        client.config_set(_FLAGS, before)


@dataclass(frozen=True)
class _Shop:
    store_id: str
    merchant_id: str
    currency: str
    category: str


def _sale(shop: _Shop, member_id: str, ts_ms: int, amount: int) -> bytes:
    return json.dumps(
        {
            "type": "sale",
            "txn_id": member_id,  # one sale per member: the member id is unique already
            "ts": ts_ms,
            "merchant_id": shop.merchant_id,
            "store_id": shop.store_id,
            "amount": amount,
            "currency": shop.currency,
            "payment": "card",
            "member_id": member_id,
            "items": [{"sku": "BENCH-1", "category": shop.category, "qty": 1, "unit_price": amount}],
        },
        separators=(",", ":"),
    ).encode()


def _shops(client: Any) -> list[_Shop]:
    from state.catalog import CatalogStore

    catalog = CatalogStore(client).load()
    shops = (
        []
        if catalog is None
        else [
            _Shop(s.store_id, s.merchant_id, s.currency, s.category)
            for s in catalog.stores
            if catalog.site_of_store(s.store_id) is not None
        ]
    )
    if not shops:
        raise CatalogError(
            "bench profile-latency: no catalog with stores in Redis; load the catalog the engine "
            "uses first (`storepulse catalog load FILE.yaml`)"
        )
    return shops


def measure_profile_latency(
    settings: Settings,
    *,
    sales: int = DEFAULT_SALES,
    rate: float = DEMO_MEMBER_SALE_RATE,
    warmup: int = DEFAULT_WARMUP,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> LatencyReport:
    """Run the measurement of the module docstring against the running engine."""
    from connectors.kafka import ConfirmingProducer
    from state.redis import connect

    if sales < 1 or not rate > 0 or warmup < 0 or not timeout_s > 0:
        raise ConfigError(f"bench: sales {sales} >= 1, rate {rate} > 0, warmup {warmup} >= 0, timeout {timeout_s} > 0")
    url = settings.require_redis_url("bench profile-latency")
    if url.partition("://")[0].lower().endswith("+cluster"):
        raise ConfigError("bench profile-latency needs one Redis server (keyspace notifications are per node)")
    client = connect(url)
    shops = _shops(client)
    run = uuid.uuid4().hex[:8]
    prefix = f"bench-{run}-"
    topic = settings.topic_transactions
    counter = 0
    before = _enable_notifications(client)
    try:
        watch = ProfileWatch(client, prefix)
    except BaseException:
        _restore_notifications(client, before)
        raise
    producer = ConfirmingProducer(settings.kafka_client_config())

    def send(n: int, label: str) -> tuple[list[str], float, float]:
        nonlocal counter
        members: list[str] = []
        started = time.monotonic()
        for i in range(n):
            ahead = started + i / rate - time.monotonic()
            if ahead > 0.0005:
                time.sleep(ahead)
            shop = shops[counter % len(shops)]
            member = f"{prefix}{label}{i}"
            sent_at = time.time()
            ts_ms = int(sent_at * 1000)
            watch.expect(member, ts_ms, sent_at)
            producer.produce(topic, shop.store_id.encode(), _sale(shop, member, ts_ms, 1000 + counter % 9000))
            members.append(member)
            counter += 1
            if counter % _FLUSH_EVERY == 0:
                producer.flush()
            watch.raise_errors()
        last = time.monotonic()
        producer.flush()
        return members, started, last

    try:
        if warmup:
            log.info("warm-up: %d sales to %s at %g/s", warmup, topic, rate)
            members, _, last = send(warmup, "w")
            ended = watch.wait(members, max(timeout_s, 60.0))
            seen = len(watch.observed(members))
            if seen < len(members):
                raise BackendUnavailable(
                    f"bench profile-latency: {seen} of {len(members)} warm-up sales reached Redis in "
                    f"{ended - last:.0f} s; is `storepulse run` running on topic {topic!r} and this Redis, "
                    "with the catalog loaded?"
                )
        log.info("measuring: %d sales at %g/s, run %s", sales, rate, run)
        members, started, last = send(sales, "")
        ended = watch.wait(members, timeout_s)
        latency = watch.observed(members)
    finally:
        watch.close()
        _restore_notifications(client, before)
        client.close()
    missing = [m for m in members if m not in latency]
    if missing:
        log.warning(
            "%d of %d sales not in Redis %.0f s after the last one was sent, e.g. member %s",
            len(missing),
            len(members),
            timeout_s,
            ", ".join(missing[:5]),
        )
    produce_s = last - started
    return LatencyReport(
        sent=len(members),
        observed=len(latency),
        latencies_s=tuple(latency[m] for m in members if m in latency),
        rate=len(members) / produce_s if produce_s > 0 else float(len(members)),
        target_rate=rate,
        seconds=ended - started,
    )


def profile_latency_command(settings: Settings, *, sales: int, rate: float, warmup: int, timeout_s: float) -> int:
    """Measure, print the report as one JSON line (the last line); 1 if any sale is missing."""
    report = measure_profile_latency(settings, sales=sales, rate=rate, warmup=warmup, timeout_s=timeout_s)
    print(json.dumps(report.to_json(), sort_keys=False), flush=True)
    return 0 if report.observed == report.sent else 1
