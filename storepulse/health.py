"""Is this engine process ready? A small thread-safe registry of named conditions.

Liveness is the process answering at all (``/healthz``); readiness (``/readyz``) is this
registry: the process is ready when it has at least one condition and every condition it
has is up. A condition is *known* once something declares or reports it, so a part that
does not run (no Kafka source in a test, no Redis sink in the demo) does not hold
readiness back, and a part that does run and fails does.

Conditions the engine reports (``<w>`` is the worker index, so one worker's success does
not hide another's failure):

``dataflow``
    Declared down ("not started") by the default registry at import, up once a sink of
    the running dataflow is built (``flows.outputs``, ``flows.redis_sinks``): a process that only serves
    metrics is not ready.
``redis[<w>]``, ``redis-profiles[<w>]``
    Up when the footfall (profile) sink connected (PING) and after every successful
    write; down from the first failed write until a retry succeeds.
``kafka[<topic>/<partition>]``
    Reported by each Kafka partition reader through ``kafka_ok`` / ``kafka_failed``: up
    when it is built (the partitions were just listed) and whenever a read returns
    messages or reaches the end; down from a transport error (broker down, unreachable)
    until a read succeeds or 15 s pass without another error.

The registry is pure: no I/O, a clock injected (monotonic seconds), so tests drive it
without HTTP or sleeps. ``READINESS`` is the one the engine and ``storepulse.metrics``
share; tests make their own.

>>> now = [0.0]
>>> r = Readiness(clock=lambda: now[0])
>>> r.report().ready  # nothing known yet: not ready
False
>>> r.up("dataflow")
>>> now[0] = 1.0; r.down("redis[0]", "ConnectionError: Connection refused")
>>> now[0] = 5.0; report = r.report()
>>> report.ready, report.failing()
(False, {'redis[0]': 'ConnectionError: Connection refused (for 4.0 s)'})
>>> r.up("redis[0]")
>>> r.report().ready
True
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

NOT_STARTED = "not started"


@dataclass(frozen=True)
class Condition:
    """One named condition: up or down, why, and since when (the registry's clock)."""

    name: str
    ok: bool
    reason: str
    since: float


@dataclass(frozen=True)
class Report:
    """A consistent snapshot of every condition at ``now``."""

    conditions: tuple[Condition, ...]
    now: float

    @property
    def ready(self) -> bool:
        return bool(self.conditions) and all(c.ok for c in self.conditions)

    def failing(self) -> dict[str, str]:
        """Each condition that is down, with its reason and how long it has been down."""
        return {c.name: f"{c.reason} (for {self.now - c.since:.1f} s)" for c in self.conditions if not c.ok}

    def to_json(self) -> dict[str, object]:
        """The body of ``/readyz``: ``{"ready": ..., "conditions": {name: {...}}}``."""
        return {
            "ready": self.ready,
            "conditions": {
                c.name: {"ok": c.ok, "reason": c.reason, "for_s": round(self.now - c.since, 3)}
                for c in self.conditions
            },
        }


class Readiness:
    """Named conditions, each up or down; ready when all known ones are up (and one is known).

    ``up``/``down`` are cheap (a lock and a dict write) and record the time only when the
    state changes, so a sink may call ``up`` after every batch. Safe from any thread.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._conditions: dict[str, Condition] = {}

    def up(self, name: str, reason: str = "ok") -> None:
        """Mark ``name`` up (declaring it if new)."""
        self._set(name, True, reason)

    def down(self, name: str, reason: str) -> None:
        """Mark ``name`` down with a short reason (declaring it if new)."""
        self._set(name, False, reason)

    def declare(self, name: str, reason: str = NOT_STARTED) -> None:
        """Make ``name`` known and down unless it is already known."""
        with self._lock:
            if name not in self._conditions:
                self._conditions[name] = Condition(name, False, reason, self._clock())

    def forget(self, name: str) -> None:
        """Drop ``name`` (a part that stopped on purpose, e.g. a closed sink)."""
        with self._lock:
            self._conditions.pop(name, None)

    def is_up(self, name: str) -> bool:
        with self._lock:
            condition = self._conditions.get(name)
            return condition is not None and condition.ok

    def report(self) -> Report:
        with self._lock:
            conditions = tuple(sorted(self._conditions.values(), key=lambda c: c.name))
            return Report(conditions, self._clock())

    def _set(self, name: str, ok: bool, reason: str) -> None:
        with self._lock:
            old = self._conditions.get(name)
            if old is not None and old.ok == ok and old.reason == reason:
                return
            since = old.since if old is not None and old.ok == ok else self._clock()
            self._conditions[name] = Condition(name, ok, reason, since)


READINESS = Readiness()
"""The process's registry: reported to by the sinks and the source, served on ``/readyz``."""
READINESS.declare("dataflow")


def dataflow_running(readiness: Readiness = READINESS) -> None:
    """The dataflow has started (a sink or source partition was built)."""
    readiness.up("dataflow", "running")


def kafka_ok(partition: str, readiness: Readiness = READINESS) -> None:
    """For the Kafka source: the broker answered the reader of ``partition`` (topic/partition)."""
    readiness.up(f"kafka[{partition}]")


def kafka_failed(reason: str, partition: str, readiness: Readiness = READINESS) -> None:
    """For the Kafka source: the broker did not answer; ``reason`` is short, no secrets."""
    readiness.down(f"kafka[{partition}]", reason)
