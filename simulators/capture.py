"""What a capture looks like: randomised shares and sightings per MAC of ``wifi.probes``.

Reads ``wifi.probes`` message values (single sightings or batched reports, as the
simulator or a sensor sends them); writes nothing. The numbers are the ones the lab
captures are described by (docs: issue 16), so a simulated capture can be put next to a
real one: a MAC is randomised when bit 0x02 of its first octet is set (locally
administered). Values that are not a probe report, or whose MAC is not ``aa:bb:..``
text, are skipped (a stream with injected bad records still gives its numbers); every
sighting of a batch counts, on every sensor that heard it.

>>> one = b'{"sensor_id":"AP-1","ts":1,"mac":"%s","rssi":-60}'
>>> s = capture_stats([one % b"a4:5e:60:00:00:01", one % b"a4:5e:60:00:00:01",
...                    one % b"7a:00:00:00:00:02", b'{"sensor_id":"AP-1","observations":['
...                    b'{"mac":"7a:00:00:00:00:02","rssi":-70,"ts":2},'
...                    b'{"mac":"de:ad:00:00:00:03","rssi":-70,"ts":2}]}', b"not json"])
>>> s.sightings, s.randomized_sightings, s.macs, s.randomized_macs, s.sensor_macs
(5, 3, 3, 2, 3)
>>> s.randomized_share_sightings, s.randomized_share_distinct, s.sightings_per_randomized_mac
(0.6, 0.6667, 1.5)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec


class _Obs(msgspec.Struct):
    mac: str


class _Report(msgspec.Struct):
    sensor_id: str = ""
    mac: str | None = None
    observations: list[_Obs] | None = None


_DECODE = msgspec.json.Decoder(_Report).decode


@dataclass(frozen=True, slots=True)
class CaptureStats:
    """Counts of a capture; the ratios are rounded to 4 places (0 when undefined)."""

    sightings: int
    randomized_sightings: int
    macs: int  # distinct
    randomized_macs: int  # distinct
    sensor_macs: int  # distinct (sensor, MAC) pairs
    randomized_sensor_macs: int

    @property
    def randomized_share_sightings(self) -> float:
        return round(self.randomized_sightings / self.sightings, 4) if self.sightings else 0.0

    @property
    def randomized_share_distinct(self) -> float:
        return round(self.randomized_macs / self.macs, 4) if self.macs else 0.0

    @property
    def sightings_per_randomized_mac(self) -> float:
        n = self.randomized_macs
        return round(self.randomized_sightings / n, 4) if n else 0.0

    @property
    def sightings_per_randomized_mac_per_sensor(self) -> float:
        """Sightings per randomised MAC at one sensor (the lab's figure is one sniffer's:
        a mall's sensors hear the same frame several times over)."""
        n = self.randomized_sensor_macs
        return round(self.randomized_sightings / n, 4) if n else 0.0

    @property
    def sightings_per_stable_mac(self) -> float:
        n = self.macs - self.randomized_macs
        return round((self.sightings - self.randomized_sightings) / n, 4) if n else 0.0

    def as_dict(self) -> dict[str, float]:
        """Counts and ratios by name, for a JSON report."""
        return {
            "sightings": self.sightings,
            "randomized_sightings": self.randomized_sightings,
            "macs": self.macs,
            "randomized_macs": self.randomized_macs,
            "randomized_share_sightings": self.randomized_share_sightings,
            "randomized_share_distinct": self.randomized_share_distinct,
            "sightings_per_randomized_mac": self.sightings_per_randomized_mac,
            "sightings_per_randomized_mac_per_sensor": self.sightings_per_randomized_mac_per_sensor,
            "sightings_per_stable_mac": self.sightings_per_stable_mac,
        }


def capture_stats(values: Iterable[bytes]) -> CaptureStats:
    """The statistics of the ``wifi.probes`` values ``values``."""
    per_pair: Counter[tuple[str, str]] = Counter()
    for value in values:
        try:
            report = _DECODE(value)
        except msgspec.DecodeError:
            continue
        sensor = report.sensor_id
        if report.observations is not None:
            per_pair.update((sensor, o.mac) for o in report.observations)
        elif report.mac is not None:
            per_pair[sensor, report.mac] += 1
    sightings = randomized_sightings = pairs = randomized_pairs = 0
    kinds: dict[str, bool] = {}
    for (_, mac), n in per_pair.items():
        randomized = _randomized(mac)
        if randomized is None:
            continue
        kinds[mac] = randomized
        sightings += n
        pairs += 1
        if randomized:
            randomized_sightings += n
            randomized_pairs += 1
    return CaptureStats(sightings, randomized_sightings, len(kinds), sum(kinds.values()),
                        pairs, randomized_pairs)


def _randomized(mac: str) -> bool | None:
    """Bit 0x02 of the first octet, or None when ``mac`` is not colon-separated hex."""
    parts = mac.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        return None
    try:
        octets = bytes.fromhex("".join(parts))
    except ValueError:
        return None
    return bool(octets[0] & 0x02)
