"""Phones as a WiFi sniffer hears them: MAC addresses, probe bursts, sequence numbers.

Reads nothing; writes nothing. Guarantees, for the frames of one trip (one person's stay
at one site on one day):

- a stable MAC is globally administered (0x02 of the first octet clear) with a real
  vendor OUI of the phone's model; a randomised MAC has 0x02 set and 0x01 clear, and
  changes every ``rotation_s`` seconds (rotation boundaries are epoch-aligned per phone,
  with a random phase);
- the 802.11 sequence number ``seq`` (0-4095) goes up by one per frame and carries on
  across a MAC rotation, as Vanhoef et al. (2016) found for many devices;
- the information elements (``ie``) and vendor OUIs (``vendor_ie``) of a phone depend on
  its model only, so they stay the same across rotations;
- probes come in bursts of 1-3 frames (20 ms apart, consecutive 2.4 GHz channels
  2412-2462 MHz) at exponential intervals with the phone's own mean.

With ``mac_behaviour: realistic`` (``REALISTIC_MODELS``) a phone behaves as its model
does instead: it probes with its stable MAC (``stable_share`` of the model's phones: old
OS versions), or rotates its randomised MAC every burst (a new MAC per scan) or every
few minutes; on a rotation ``seq`` carries on or restarts at a random value, by model;
and ``ie``/``vendor_ie`` is one of a few variants of its model (shared by every phone of
that variant; a fingerprint names one model). ``REALISTIC_MODELS`` is calibrated
against two real lab sniffers (see the comment above the table), not taken from any
vendor's documentation.

>>> m = random_macs(np.random.default_rng(1), 3)
>>> all(int(x[:2], 16) & 0x03 == 0x02 for x in m), len(set(m))
(True, 3)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class PhoneModel:
    name: str
    share: float
    ouis: tuple[int, ...]
    ie: tuple[int, ...]
    vendor_ie: tuple[int, ...]


MODELS: tuple[PhoneModel, ...] = (
    PhoneModel("iPhone iOS17", 0.22, (0xA45E60, 0xF01898, 0x3C22FB, 0xACBC32, 0x28CFE9),
               (0, 1, 50, 3, 45, 127, 191, 221), (0x0017F2, 0x0050F2)),
    PhoneModel("iPhone iOS16", 0.08, (0xA45E60, 0xF01898, 0x28CFE9),
               (0, 1, 50, 3, 45, 127, 221), (0x0017F2, 0x0050F2)),
    PhoneModel("Huawei", 0.2, (0x00E0FC, 0x4846FB, 0x286ED4, 0x009ACD),
               (0, 1, 50, 45, 127, 191, 221), (0x00E0FC, 0x0050F2)),
    PhoneModel("Xiaomi", 0.17, (0x640980, 0x286C07, 0xF8A45F, 0x3480B3, 0x508F4C),
               (0, 1, 50, 3, 45, 127, 107, 221), (0x0050F2, 0x00904C)),
    PhoneModel("OPPO", 0.13, (0x2C5BB8, 0x1C77F6),
               (0, 1, 50, 45, 127, 221), (0x0050F2, 0x001018)),
    PhoneModel("Samsung", 0.1, (0x5C0A5B, 0x8C7712, 0x3423BA),
               (0, 1, 50, 3, 45, 127, 191, 221, 255), (0x0050F2, 0x001018)),
    PhoneModel("Android MTK", 0.1, (0x000CE7, 0x00E04C),
               (0, 1, 50, 45, 221), (0x0050F2, 0x000CE7)),
)
MODEL_SHARES = np.array([m.share for m in MODELS]) / sum(m.share for m in MODELS)
Fingerprint = tuple[tuple[int, ...], tuple[int, ...]]  # (ie, vendor_ie)

# Vendor OUIs of the vendor-specific elements (as in the ``vendor_ie`` field).
APPLE, MICROSOFT, BROADCOM, EPIGRAM, WFA = 0x0017F2, 0x0050F2, 0x001018, 0x00904C, 0x506F9A
HUAWEI, QUALCOMM, MEDIATEK, REALTEK = 0x00E0FC, 0x8CFDF0, 0x000CE7, 0x00E04C


@dataclass(frozen=True)
class DeviceModel:
    """How one kind of device probes (``mac_behaviour: realistic``).

    ``stable_share`` of its phones probe with their stable MAC; the others rotate a
    randomised MAC every burst (``rotation="burst"``) or about every ``rotation_min``
    minutes (``"interval"``), and on a rotation their ``seq`` carries on (``"continue"``)
    or restarts at a random value (``"restart"``). A phone of the model probes every
    ``interval_factor`` times the scenario's ``probe_interval_s`` on average and carries
    one of ``fingerprints`` (drawn uniformly, kept for life)."""

    name: str
    share: float
    stable_share: float
    rotation: Literal["burst", "interval"]
    rotation_min: float
    seq: Literal["continue", "restart"]
    interval_factor: float
    ouis: tuple[int, ...]
    fingerprints: tuple[Fingerprint, ...]


# Shares and behaviour are calibrated so that a simulated capture looks like the two lab
# sniffers' (randomised share of sightings ~0.35-0.4 with the scenario's fixed devices,
# >= 0.9 of distinct MACs randomised, ~4-5 sightings per randomised MAC, about one
# rotation in seven continuing its seq, a few dozen ie lists shared by models); which
# vendor does what is a plausible assignment, not a measurement per vendor.
_IOS_A = (0, 1, 50, 3, 45, 127, 255, 221, 221, 221), (APPLE, MICROSOFT, BROADCOM)
_IOS_B = (0, 1, 50, 3, 45, 127, 255, 255, 221, 221, 221, 221), (EPIGRAM, MICROSOFT, BROADCOM, WFA)
_IOS_C = (0, 1, 50, 3, 45, 127, 107, 221, 221, 221), (APPLE, MICROSOFT, BROADCOM)
_IOS_D = (0, 1, 50, 3, 45, 127, 221, 221, 221), (APPLE, MICROSOFT, BROADCOM)
REALISTIC_MODELS: tuple[DeviceModel, ...] = (
    DeviceModel("iPhone iOS 17+", 0.2, 0.0, "burst", 0.0, "restart", 1.5,
                (0xA45E60, 0xF01898, 0x3C22FB, 0xACBC32, 0x28CFE9), (_IOS_A, _IOS_B)),
    DeviceModel("iPhone iOS 14-16", 0.1, 0.0, "burst", 0.0, "restart", 1.5,
                (0xA45E60, 0xF01898, 0x28CFE9), (_IOS_C, _IOS_D)),
    DeviceModel("Huawei/Honor", 0.18, 0.1, "burst", 0.0, "restart", 1.2,
                (0x00E0FC, 0x4846FB, 0x286ED4, 0x009ACD),
                (((0, 1, 50, 3, 45, 127, 255), ()), ((0, 1, 50, 3, 45, 127, 255, 221), (HUAWEI,)),
                 ((0, 1, 50, 3, 45, 127), ()))),
    DeviceModel("Xiaomi/Redmi", 0.14, 0.15, "burst", 0.0, "restart", 1.0,
                (0x640980, 0x286C07, 0xF8A45F, 0x3480B3, 0x508F4C),
                (((0, 1, 50, 3, 45, 127, 107), ()), ((0, 1, 50, 3, 45, 127, 107, 221), (MICROSOFT,)))),
    DeviceModel("OPPO/realme", 0.12, 0.1, "burst", 0.0, "continue", 1.0, (0x2C5BB8, 0x1C77F6),
                (((0, 1, 50, 127, 221, 3), (MICROSOFT,)), ((0, 1, 50, 221, 3), (MICROSOFT,)))),
    DeviceModel("vivo", 0.09, 0.1, "interval", 5.0, "restart", 1.0, (0x3CA616, 0x9CA5C0),
                (((0, 1, 50, 3, 45, 127, 191, 221, 255, 221), (MICROSOFT, WFA)),
                 ((0, 1, 50, 3, 45, 127, 191, 221, 255, 255, 221), (MICROSOFT, WFA)))),
    DeviceModel("Samsung", 0.07, 0.05, "burst", 0.0, "restart", 1.0,
                (0x5C0A5B, 0x8C7712, 0x3423BA),
                (((0, 1, 50, 3, 45, 191, 221, 127, 255, 221, 221), (MICROSOFT, WFA, QUALCOMM)),
                 ((0, 1, 50, 3, 45, 191, 221, 255, 127, 255, 221, 221), (MICROSOFT, WFA, QUALCOMM)))),
    DeviceModel("Android <= 9 (MediaTek, Realtek)", 0.1, 0.8, "interval", 15.0, "continue", 0.8,
                (0x000CE7, 0x00E04C, 0x70B7AA),
                (((0, 1, 50, 45, 221), (MICROSOFT, MEDIATEK)), ((0, 1, 50, 3, 45, 221), (BROADCOM,)),
                 ((0, 1, 50, 45, 127, 221), (MICROSOFT, REALTEK)))),
)
# Store equipment (POS terminals, tablets, signage, printers): mostly stable MACs.
EQUIPMENT = DeviceModel("Store equipment", 1.0, 0.9, "interval", 30.0, "continue", 0.5,
                        (0x240AC4, 0xB827EB, 0xDCA632, 0x001A11),
                        (((0, 1, 50, 45, 221), (MICROSOFT,)), ((0, 1, 50, 3, 45), ()),
                         ((0, 1, 50, 221), (MICROSOFT, REALTEK))))
DEVICE_MODELS: tuple[DeviceModel, ...] = (*REALISTIC_MODELS, EQUIPMENT)
PHONE_SHARES = np.array([m.share for m in REALISTIC_MODELS]) / sum(m.share for m in REALISTIC_MODELS)
# Fingerprints of every device model, flat; model m's are FP_FIRST[m]:FP_FIRST[m + 1].
FINGERPRINTS: tuple[Fingerprint, ...] = tuple(fp for m in DEVICE_MODELS for fp in m.fingerprints)
FP_FIRST = np.cumsum([0] + [len(m.fingerprints) for m in DEVICE_MODELS])
CHANNELS_MHZ = 2412 + 5 * np.arange(11)
BURST_FRAMES = np.array([1, 2, 3])
BURST_P = np.array([0.3, 0.4, 0.3])
FRAME_GAP_MS = 20


def mac_text(octets: np.ndarray) -> list[str]:
    """``aa:bb:cc:dd:ee:ff`` for each row of an (n, 6) uint8 array."""
    return [bytes(row).hex(":") for row in octets.astype(np.uint8)]


def random_macs(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` locally administered unicast MACs, as phones make them up."""
    octets = rng.integers(0, 256, size=(n, 6), dtype=np.int64)
    octets[:, 0] = (octets[:, 0] & 0xFC) | 0x02
    return mac_text(octets)


def stable_macs(rng: np.random.Generator, models: np.ndarray,
                table: tuple[PhoneModel, ...] | tuple[DeviceModel, ...] = MODELS) -> list[str]:
    """One globally administered MAC per phone, with an OUI of its model in ``table``."""
    n = len(models)
    ouis = np.array([table[m].ouis[k % len(table[m].ouis)] for m, k in
                     zip(models.tolist(), rng.integers(0, 64, n).tolist(), strict=True)],
                    dtype=np.int64)
    octets = np.empty((n, 6), dtype=np.int64)
    octets[:, 0] = ouis >> 16
    octets[:, 1] = (ouis >> 8) & 0xFF
    octets[:, 2] = ouis & 0xFF
    octets[:, 3:] = rng.integers(0, 256, size=(n, 3))
    return mac_text(octets)


@dataclass
class Frames:
    """Probe frames of many trips, in trip order, then time order within a trip."""

    trip: np.ndarray  # int64 index of the trip
    ts: np.ndarray  # int64 epoch ms
    seq: np.ndarray  # int64 0..4095
    ch: np.ndarray  # int64 MHz
    mac: np.ndarray  # int64 index into the MAC table
    burst: np.ndarray | None = None  # int64 index of the frame's burst (one run: unique)

    def __len__(self) -> int:
        return len(self.ts)


class MacTable:
    """Every MAC the simulation uses, by index (so frames carry small integers), and who
    owns it. A MAC drawn twice (rare: 24 random bits behind an OUI) is drawn again, so a
    MAC always belongs to one person."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.text: list[str] = []
        self.owner: list[str] = []
        self._index: dict[str, int] = {}

    def add(self, macs: list[str], owners: list[str]) -> np.ndarray:
        first = len(self.text)
        for mac, owner in zip(macs, owners, strict=True):
            while mac in self._index:  # keep the OUI and the administered bits
                tail = self.rng.integers(0, 256, 3).astype(np.uint8).tobytes().hex(":")
                mac = mac[:9] + tail
            self._index[mac] = len(self.text)
            self.text.append(mac)
            self.owner.append(owner)
        return np.arange(first, len(self.text), dtype=np.int64)


def probe_frames(
    rng: np.random.Generator,
    *,
    arrive_ms: np.ndarray,
    depart_ms: np.ndarray,
    mean_interval_s: np.ndarray,
    randomized: np.ndarray,
    stable_mac: np.ndarray,
    rotation_s: np.ndarray,
    rotation_phase_s: np.ndarray,
    owner: list[str],
    macs: MacTable,
    per_burst: np.ndarray | None = None,
    seq_restart: np.ndarray | None = None,
) -> Frames:
    """Probe frames of trips with a phone (one row per trip in every argument).

    ``stable_mac`` is the MAC-table index of each phone's stable MAC (used when not
    ``randomized``); randomised phones get fresh MACs added to ``macs`` as ``owner``'s,
    one per ``rotation_s`` period or, where ``per_burst``, one per burst. Where
    ``seq_restart``, a new MAC's first frame has a random ``seq`` (otherwise it carries
    on). Without ``per_burst`` and ``seq_restart`` (or with both all False) the random
    draws, and so the frames, are the same as before they existed.
    """
    n_trips = len(arrive_ms)
    if n_trips == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Frames(empty, empty, empty, empty, empty, empty)
    dur_s = (depart_ms - arrive_ms) / 1000.0
    expect = dur_s / mean_interval_s
    n = np.ceil(expect * 1.4 + 12).astype(np.int64)
    trip = np.repeat(np.arange(n_trips), n)
    first = np.cumsum(n) - n
    gaps = rng.exponential(1.0, len(trip))
    gaps[first] = rng.random(n_trips)  # the first burst comes at a random phase
    gaps *= mean_interval_s[trip]
    elapsed = np.cumsum(gaps)
    elapsed -= np.repeat(elapsed[first] - gaps[first], n)
    burst_ts = arrive_ms[trip] + (elapsed * 1000).astype(np.int64)
    keep = burst_ts < depart_ms[trip]
    trip, burst_ts = trip[keep], burst_ts[keep]
    size = rng.choice(BURST_FRAMES, size=len(trip), p=BURST_P)
    ch0 = rng.integers(0, len(CHANNELS_MHZ), size=len(trip))
    f_trip = np.repeat(trip, size)
    f_burst = np.repeat(np.arange(len(trip)), size)
    burst_first = np.cumsum(size) - size
    j = np.arange(len(f_trip)) - np.repeat(burst_first, size)  # frame number in its burst
    ts = burst_ts[f_burst] + j * FRAME_GAP_MS
    ch = CHANNELS_MHZ[(ch0[f_burst] + j) % len(CHANNELS_MHZ)]
    counts = np.bincount(f_trip, minlength=n_trips)
    trip_first = np.cumsum(counts) - counts
    seq0 = rng.integers(0, 4096, size=n_trips)
    seq = (seq0[f_trip] + np.arange(len(f_trip)) - trip_first[f_trip]) % 4096
    mac = stable_mac[f_trip].copy()
    rnd = randomized[f_trip]
    if rnd.any():
        period_ms = (rotation_s * 1000).astype(np.int64)
        phase_ms = (rotation_phase_s * 1000).astype(np.int64)
        r_trip = f_trip[rnd]
        epoch = (ts[rnd] - phase_ms[r_trip]) // period_ms[r_trip]
        if per_burst is not None and per_burst.any():
            epoch = np.where(per_burst[r_trip], f_burst[rnd], epoch)
        pair = np.stack([r_trip, epoch], axis=1)
        uniq, inverse = np.unique(pair, axis=0, return_inverse=True)
        new = macs.add(random_macs(rng, len(uniq)), [owner[t] for t in uniq[:, 0].tolist()])
        mac[rnd] = new[inverse.ravel()]
        if seq_restart is not None and seq_restart.any():
            seq = _restart_seq(rng, seq, mac, rnd & seq_restart[f_trip])
    return Frames(trip=f_trip, ts=ts, seq=seq, ch=ch, mac=mac, burst=f_burst)


def _restart_seq(rng: np.random.Generator, seq: np.ndarray, mac: np.ndarray,
                 restart: np.ndarray) -> np.ndarray:
    """``seq`` where each run of frames with one MAC among ``restart`` frames starts at a
    random number and goes up by one per frame (frames are grouped by trip, in time order,
    so a MAC's frames are one run)."""
    idx = np.flatnonzero(restart)
    if len(idx) == 0:
        return seq
    run_start = np.ones(len(idx), dtype=bool)
    run_start[1:] = (mac[idx[1:]] != mac[idx[:-1]]) | (idx[1:] != idx[:-1] + 1)
    run = np.cumsum(run_start) - 1
    first = np.flatnonzero(run_start)
    start = rng.integers(0, 4096, size=len(first))
    out = seq.copy()
    out[idx] = (start[run] + np.arange(len(idx)) - first[run]) % 4096
    return out
