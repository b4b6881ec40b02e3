"""Bad input on purpose: replace a share of the messages by broken ones, and count them.

Reads and rewrites the simulator's message lists in place; nothing else. Per topic,
``share`` of its messages are replaced, spread evenly over the kinds of defect that make
sense for the topic (an unknown store only for transactions, an unknown sensor only for
probes, a negative amount only for transactions). Oversized values (1.5 MiB) are capped
at ``MAX_OVERSIZED`` per topic so a large share does not mean gigabytes; the rest of
their quota goes to the other kinds. Each bad record has exactly one defect, so the
reason the engine must give is unambiguous:

=================  ===============  ==================================================
kind               reason           what changes
=================  ===============  ==================================================
broken_json        bad_json         value cut in half, or prefixed with invalid UTF-8
missing_field      bad_schema       sensor_id / amount / member_id removed
mistyped_field     bad_schema       rssi / amount / ts becomes a string
unknown_sensor     unknown_sensor   sensor_id (and key) not in the catalog
unknown_store      unknown_store    store_id (and key) not in the catalog
negative_amount    bad_value        amount negated
ts_future          ts_future        ts moved 30 days ahead (probes: single sightings)
ts_past            ts_past          ts moved 400 days back
oversized          oversized        a 1.5 MiB ``padding`` field added (otherwise valid)
=================  ===============  ==================================================

>>> quota(10, TOPIC_KINDS["members.events"])
{'broken_json': 3, 'missing_field': 3, 'mistyped_field': 2, 'oversized': 2}
>>> quota(100, TOPIC_KINDS["members.events"])["oversized"], sum(quota(100, ("oversized",)).values())
(2, 2)
"""

from __future__ import annotations

import msgspec
import numpy as np

REASON = {
    "broken_json": "bad_json", "missing_field": "bad_schema", "mistyped_field": "bad_schema",
    "unknown_sensor": "unknown_sensor", "unknown_store": "unknown_store",
    "negative_amount": "bad_value", "ts_future": "ts_future", "ts_past": "ts_past",
    "oversized": "oversized",
}
TOPIC_KINDS: dict[str, tuple[str, ...]] = {
    "wifi.probes": ("ts_future", "ts_past", "broken_json", "missing_field", "mistyped_field",
                    "unknown_sensor", "oversized"),
    "pos.transactions": ("ts_future", "ts_past", "broken_json", "missing_field",
                         "mistyped_field", "unknown_store", "negative_amount", "oversized"),
    "members.events": ("broken_json", "missing_field", "mistyped_field", "oversized"),
}
MAX_OVERSIZED = 2
OVERSIZED_BYTES = 3 * (1 << 19)  # 1.5 MiB
DAY_MS = 86_400_000
_MISSING = {"wifi.probes": "sensor_id", "pos.transactions": "amount",
            "members.events": "member_id"}


def quota(total: int, kinds: tuple[str, ...]) -> dict[str, int]:
    """How many of ``total`` bad records each kind gets: evenly, oversized capped."""
    base, rem = divmod(total, len(kinds))
    counts = {k: base + (1 if i < rem else 0) for i, k in enumerate(kinds)}
    if counts.get("oversized", 0) > MAX_OVERSIZED:
        spare = counts["oversized"] - MAX_OVERSIZED
        counts["oversized"] = MAX_OVERSIZED
        others = [k for k in kinds if k != "oversized"]
        for i in range(spare if others else 0):
            counts[others[i % len(others)]] += 1
    return counts


def inject(
    rng: np.random.Generator,
    *,
    topic: list[str],
    batched: np.ndarray,
    key: list[bytes],
    value: list[bytes],
    share: float,
) -> tuple[dict[tuple[str, str], int], list[int]]:
    """Replace ``share`` of each topic's messages in ``key``/``value`` (``batched``: the
    message is a batched probe report). Returns the counts by (topic, reason) and the
    indices replaced."""
    counts: dict[tuple[str, str], int] = {}
    replaced: list[int] = []
    if share <= 0:
        return counts, replaced
    topics = np.array(topic)
    for name, kinds in TOPIC_KINDS.items():
        idx = np.flatnonzero(topics == name)
        total = int(round(share * len(idx)))
        if total == 0:
            continue
        order = rng.permutation(idx)
        used = np.zeros(len(order), dtype=bool)
        singles = ~batched[order]
        for kind, n in quota(total, kinds).items():
            prefer = singles & ~used if kind.startswith("ts_") else ~used
            pick = np.flatnonzero(prefer)[:n]
            if len(pick) < n:  # not enough single sightings: use batched reports too
                rest = np.flatnonzero(~used & ~np.isin(np.arange(len(order)), pick))
                pick = np.concatenate([pick, rest[: n - len(pick)]])
            used[pick] = True
            for i in order[pick].tolist():
                key[i], value[i] = _spoil(rng, name, kind, key[i], value[i])
                replaced.append(i)
            if len(pick):
                reason = (name, REASON[kind])
                counts[reason] = counts.get(reason, 0) + len(pick)
    return counts, sorted(replaced)


def _spoil(rng: np.random.Generator, topic: str, kind: str, key: bytes, value: bytes
           ) -> tuple[bytes, bytes]:
    if kind == "broken_json":
        if rng.random() < 0.5:
            return key, value[: len(value) // 2]
        return key, b"\xff\xfe" + value
    doc = msgspec.json.decode(value)
    if kind == "missing_field":
        del doc[_MISSING[topic]]
    elif kind == "mistyped_field":
        if topic == "wifi.probes":
            target = doc["observations"][0] if "observations" in doc else doc
            target["rssi"] = str(target["rssi"])
        elif topic == "pos.transactions":
            doc["amount"] = str(doc["amount"])
        else:
            doc["ts"] = str(doc["ts"])
    elif kind == "unknown_sensor":
        doc["sensor_id"] = f"AP-X{int(rng.integers(0, 1 << 16)):04x}"
        key = doc["sensor_id"].encode()
    elif kind == "unknown_store":
        doc["store_id"] = f"S-X{int(rng.integers(0, 1 << 16)):04x}"
        key = doc["store_id"].encode()
    elif kind == "negative_amount":
        doc["amount"] = -doc["amount"]
    elif kind in ("ts_future", "ts_past"):
        shift = 30 * DAY_MS if kind == "ts_future" else -400 * DAY_MS
        for target in doc.get("observations") or [doc]:
            target["ts"] += shift
    elif kind == "oversized":
        doc["padding"] = "x" * OVERSIZED_BYTES
    else:  # pragma: no cover - TOPIC_KINDS and this function are kept in step
        raise ValueError(kind)
    return key, msgspec.json.encode(doc)
