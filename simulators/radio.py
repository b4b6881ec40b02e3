"""Which sensors hear a probe frame, how loud, and the ``wifi.probes`` messages they send.

Reads positions of frames and a site's floor plan; writes nothing. The model is
log-distance path loss: ``rssi = P(1 m) + device offset - 10 n log10(d) - walls * L +
noise``, with ``d`` the 3-D distance (sensors hang ``sensor_height_m`` above a phone),
``L`` dB per wall, Gaussian noise per frame and sensor, and nothing heard below the
sensitivity floor. Guarantees: every sighting's RSSI is an integer at or above the floor;
a dark sensor hears nothing in its window; messages follow the ``wifi.probes`` contract
(single sightings, or batched reports every ``batch_interval_s`` whose message time is
the report time, observations in time order).

>>> from simulators.scenario import Radio
>>> r = Radio(noise_db=0.0, device_offset_db=0.0, sensor_height_m=0.0)
>>> mean_rssi(r, np.array([1.0, 10.0, 10.0]), np.array([0, 0, 1])).round(1).tolist()
[-40.0, -67.0, -75.0]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulators.scenario import Radio

CHUNK_FRAMES = 200_000


def mean_rssi(radio: Radio, dist_m: np.ndarray, walls: np.ndarray) -> np.ndarray:
    """Expected RSSI (dBm) at a distance through some walls, before noise."""
    d = np.maximum(dist_m, 1.0)
    return (radio.rssi_at_1m_dbm - 10.0 * radio.path_loss_exponent * np.log10(d)
            - radio.wall_loss_db * walls)


@dataclass
class Heard:
    """Sightings: frame ``frame`` heard by sensor ``sensor`` (site-local index) at ``rssi``."""

    frame: np.ndarray
    sensor: np.ndarray
    rssi: np.ndarray


def hear(
    rng: np.random.Generator,
    radio: Radio,
    *,
    x: np.ndarray,
    y: np.ndarray,
    region: np.ndarray,
    device_offset_db: np.ndarray,
    sensor_xy: np.ndarray,
    walls: np.ndarray,
) -> Heard:
    """The sightings of frames at positions ``x, y`` in ``region`` by a site's sensors."""
    frames, sensors, rssis = [], [], []
    h2 = radio.sensor_height_m**2
    for lo in range(0, len(x), CHUNK_FRAMES):
        hi = min(lo + CHUNK_FRAMES, len(x))
        dx = x[lo:hi, None] - sensor_xy[None, :, 0]
        dy = y[lo:hi, None] - sensor_xy[None, :, 1]
        dist = np.sqrt(dx * dx + dy * dy + h2)
        level = mean_rssi(radio, dist, walls[region[lo:hi]])
        level += device_offset_db[lo:hi, None]
        level += rng.normal(0.0, radio.noise_db, size=level.shape)
        f, s = np.nonzero(level >= radio.sensitivity_dbm)
        frames.append(f + lo)
        sensors.append(s)
        rssis.append(np.floor(level[f, s]).astype(np.int64))
    if not frames:
        empty = np.zeros(0, dtype=np.int64)
        return Heard(empty, empty, empty)
    return Heard(np.concatenate(frames), np.concatenate(sensors), np.concatenate(rssis))


@dataclass
class SensorSetup:
    """How one sensor reports."""

    sensor_id: str
    batched: bool
    extras: bool  # adds seq / ie / vendor_ie / ch (a sniffer; a gateway feed does not)
    phase_ms: int  # batched: reports at phase + k * interval
    dark: list[tuple[int, int]]  # windows [start, end) in which it sends nothing


@dataclass
class Messages:
    """Messages of one topic: write time, key and value, in no particular order."""

    ts: list[int]
    key: list[bytes]
    value: list[bytes]
    sightings: int = 0  # observations in them (a batched report holds several)

    def extend(self, other: Messages) -> None:
        self.ts.extend(other.ts)
        self.key.extend(other.key)
        self.value.extend(other.value)
        self.sightings += other.sightings


def probe_messages(
    setup: SensorSetup,
    *,
    ts: np.ndarray,
    rssi: np.ndarray,
    mac: np.ndarray,
    seq: np.ndarray,
    ch: np.ndarray,
    model: np.ndarray,
    mac_text: list[bytes],
    fp_json: list[tuple[bytes, bytes]],
    batch_interval_ms: int,
) -> Messages:
    """The messages one sensor sends for its sightings (one row per sighting; ``mac``
    indexes ``mac_text``, ``model`` indexes ``fp_json``: the JSON of a phone model's
    ``ie`` and ``vendor_ie`` lists)."""
    order = np.argsort(ts, kind="stable")
    tick = batch_interval_ms
    report = setup.phase_ms + -(-(ts[order] - setup.phase_ms) // tick) * tick
    keep = np.ones(len(order), dtype=bool)
    for start, end in setup.dark:  # heard in the window, or due to be reported in it
        keep &= ~((ts[order] >= start) & (ts[order] < end))
        if setup.batched:
            keep &= ~((report >= start) & (report < end))
    order = order[keep]
    if setup.batched and len(order):
        # one observation per MAC per report: the strongest frame of the interval
        report = setup.phase_ms + -(-(ts[order] - setup.phase_ms) // tick) * tick
        best = np.lexsort((-rssi[order], mac[order], report))
        first = np.ones(len(best), dtype=bool)
        first[1:] = (np.diff(report[best]) != 0) | (np.diff(mac[order][best]) != 0)
        order = order[np.sort(best[first])]  # back in time order
    sid = setup.sensor_id.encode()
    o_ts = ts[order]
    rows = zip(o_ts.tolist(), rssi[order].tolist(), mac[order].tolist(), seq[order].tolist(),
               ch[order].tolist(), model[order].tolist(), strict=True)
    if setup.batched:
        if setup.extras:
            pre = {m: b'{"mac":"%s","rssi":' % mac_text[m] for m in np.unique(mac).tolist()}
            suf = [b',"ie":%s,"vendor_ie":%s,"ch":' % fp for fp in fp_json]
            frags = [_OBS_X % (pre[m], r, t, s, suf[k], c) for t, r, m, s, c, k in rows]
        else:
            frags = [_OBS % (mac_text[m], r, t) for t, r, m, _s, _c, _k in rows]
        if not frags:
            return Messages([], [], [])
        report = setup.phase_ms + -(-(o_ts - setup.phase_ms) // tick) * tick
        cut = np.flatnonzero(np.diff(report)) + 1
        bounds = [0, *cut.tolist(), len(report)]
        head = b'{"sensor_id":"' + sid + b'","observations":['
        out = Messages([], [], [])
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            out.ts.append(int(report[a]))
            out.value.append(head + b",".join(frags[a:b]) + b"]}")
        out.key = [sid] * len(out.ts)
        out.sightings = len(frags)
        return out
    if setup.extras:
        pre = {m: b',"mac":"%s","rssi":' % mac_text[m] for m in np.unique(mac).tolist()}
        head = b'{"sensor_id":"%s","ts":' % sid
        suf = [b',"ie":%s,"vendor_ie":%s,"ch":' % fp for fp in fp_json]
        values = [_ONE_X % (head, t, pre[m], r, s, suf[k], c) for t, r, m, s, c, k in rows]
    else:
        values = [_ONE % (sid, t, mac_text[m], r) for t, r, m, _s, _c, _k in rows]
    return Messages(o_ts.tolist(), [sid] * len(values), values, len(values))


_OBS_X = b'%s%d,"ts":%d,"seq":%d%s%d}'
_OBS = b'{"mac":"%s","rssi":%d,"ts":%d}'
_ONE_X = b'%s%d%s%d,"seq":%d%s%d}'
_ONE = b'{"sensor_id":"%s","ts":%d,"mac":"%s","rssi":%d}'
