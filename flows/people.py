"""People present at one sensor, per 5-minute event-time window, from probe sightings.

Used by the footfall step (``flows.footfall``), one ``SensorPeople`` per sensor, with the
sensor's calibration from the catalog (``connectors.catalog.PeopleCalibration``); fitted
offline by ``storepulse eval occupancy`` (``fit_calibration``). The method and its
measured error are in docs/people.md.

Reads batches of sightings of one sensor as the engine's decode step emits them (no raw
MAC: a keyed 64-bit ``device`` hash, salted by UTC day when ``randomized``; rssi; the
802.11 ``seq`` shifted by a keyed offset of the day, or None; ``fingerprint``, a keyed hash
of the frame's element ids and vendor OUIs). Writes,
per closed window, a ``PeopleWindow``: device counts (the features) and, given a
calibration (``PeopleCalibration``, ``estimate``), the estimated number of people.

Per sensor it keeps (all bounded, expired by event time):

- the open windows: per device heard in them, (first ts, first seq, last ts, last seq,
  max rssi, fingerprint, randomized). Dropped when the window closes.
- randomised-MAC association: ``link`` (device -> chain) and ``chains`` (last ts, last
  seq, last rssi, fingerprint, last window). A randomised MAC first heard after a chain's
  last frame, within ``Params.gap_ms``, with the same fingerprint and a sequence number
  that continues the chain's (``1 <= (seq - last_seq) mod 4096 <= max_seq_step``) and an
  rssi within ``max_rssi_jump`` dB, is the same phone; the closest continuation wins.
  Chains and links idle longer than ``Params.horizon_ms`` are dropped once more than 4,096
  links are held, and all of them at a UTC day change (randomised hashes change at
  midnight UTC anyway), so a day's worth is the most ever kept.
- always-present stable MACs: per stable device, the number of windows it was heard in,
  decayed by ``0.5`` every ``Params.halflife_windows`` windows in which the sensor heard
  anything (so months without recording do not erase it). A device whose score reaches
  ``Params.present_windows`` is fixed equipment or staff and is not counted. Scores that
  decay below 0.5 are dropped. No hand-made list.

Features of a window (``FEATURES``), each at the rssi floor ``Params.floor`` (max rssi of
the device or chain in the window >= floor):

- ``macs``: distinct device hashes (the baseline's count);
- ``stable``/``random``: the same split by the locally-administered bit;
- ``chains``: associated randomised devices;
- ``stable_np``: stable devices that are not always-present;
- ``chains_p``/``stable_np_p``: the same, also heard (any rssi) in one of the
  ``Params.persist_windows`` windows before: a person in the room stays, a passer-by in
  the corridor does not;
- ``<count>_s2``: the mean of the count over this window and the one before (0 if nothing
  was heard in it), a causal smoothing: a class sits for hours.

Causal: a window's features use its own sightings and state built from earlier ones.
Sightings of an already closed window are late: counted in ``late`` and dropped.

>>> from connectors.records import Sighting
>>> def heard(ts, device, randomized, rssi, seq, fingerprint):
...     return Sighting(ts, "AP-1", None, "hall", device, randomized, rssi, seq, fingerprint, 0)
>>> sp = SensorPeople(Params(floor=-70))
>>> # a randomised phone rotating its MAC (device 11 -> 12) between two scans, seq continuing,
>>> # plus a stable MAC heard at -80 dBm (below the floor)
>>> sp.add([heard(1_000, 11, True, -60, 100, 5), heard(1_010, 11, True, -61, 101, 5),
...         heard(31_000, 12, True, -62, 108, 5), heard(40_000, 99, False, -80, 7, 6)])
>>> w = sp.close(300_000)[0]
>>> w.window_start_ts, w.features["macs"], w.features["random"], w.features["chains"], w.features["stable"]
(0, 2, 2, 1, 0)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from connectors.catalog import PeopleCalibration

WINDOW_MS = 300_000
DAY_MS = 86_400_000
SEQ_MOD = 4096
NEVER = -(1 << 40)  # a window index before any heard
COUNTS = ("macs", "stable", "random", "chains", "stable_np", "chains_p", "stable_np_p")
FEATURES = COUNTS + tuple(f"{c}_s2" for c in COUNTS)
RECOMMENDED = ("stable_np_s2", "chains_s2", "chains_p_s2")


@dataclass(frozen=True)
class Params:
    """Tuning of ``SensorPeople``; defaults are the recommended values."""

    floor: int = -65  # dBm: a device counts in a window if its max rssi there is >= floor
    gap_ms: int = 30_000  # association: longest silence between a chain's last frame and the next MAC
    max_seq_step: int = 64  # association: largest seq increment across a MAC change
    max_rssi_jump: int = 20  # association: largest rssi change (dB) across a MAC change
    horizon_ms: int = 1_800_000  # drop chains/links idle longer than this
    halflife_windows: int = 288  # always-present score half-life, in active windows (24 h)
    present_windows: float = 48.0  # score (windows heard, decayed) from which a stable MAC is fixed
    persist_windows: int = 12  # chains_p/stable_np_p: heard in one of this many windows before (1 h)


def estimate(calibration: PeopleCalibration, features: dict[str, float]) -> float:
    """People from a window's counts: max(0, intercept + sum(coef[f] * log1p(features[f]))).
    The log: on the lab's days the devices per person fall as a class grows and differ from
    day to day, and the log absorbs most of that (docs/people.md)."""
    total = calibration.intercept + sum(c * math.log1p(features[f]) for f, c in calibration.coef.items())
    return max(0.0, total)


DEFAULT_CALIBRATION = PeopleCalibration(
    floor=-65, intercept=-0.0011, coef={"stable_np_s2": 0.1051, "chains_s2": 3.2354, "chains_p_s2": 2.9998}
)
"""For a sensor without its own calibration: the fit on all the lab's development days
(LAB-P1, the sniffer with 5x the data; ``RECOMMENDED`` features at -65 dBm)."""


@dataclass(frozen=True)
class PeopleWindow:
    window_start_ts: int
    features: dict[str, float]
    people: float | None


@dataclass
class _Chain:
    last_ts: int
    last_seq: int
    last_rssi: int
    fp: int
    last_window: int = NEVER


@dataclass
class _Stable:
    score: float
    at: int  # active-window index of the last update
    last_window: int = NEVER


@dataclass
class SensorPeople:
    """Per-sensor streaming people estimator; see the module docstring."""

    params: Params = field(default_factory=Params)
    calibration: PeopleCalibration | None = None
    # window index -> {device: [first_ts, first_seq, last_ts, last_seq, max_rssi, fp, randomized]}
    open: dict[int, dict[int, list[int]]] = field(default_factory=dict)
    closed_before: int = -(1 << 62)  # windows below this index are closed
    link: dict[int, int] = field(default_factory=dict)  # randomised device -> chain id
    link_seen: dict[int, int] = field(default_factory=dict)  # randomised device -> last ts
    chains: dict[int, _Chain] = field(default_factory=dict)
    by_fp: dict[int, list[int]] = field(default_factory=dict)  # fp -> recently active chain ids
    next_chain: int = 0
    day: int = -1
    stable: dict[int, _Stable] = field(default_factory=dict)
    active: int = 0  # windows closed with at least one sighting
    prev: tuple[int, dict[str, float]] = (NEVER, {})  # the last closed window's counts, for _s2
    late: int = 0

    def add(self, sightings: Iterable[Any]) -> None:
        """Take one batch of sightings (``connectors.records.Sighting``, or anything with
        its ``ts``, ``device``, ``randomized``, ``rssi``, ``seq`` and ``fingerprint``), any
        order: one dict update per sighting, the only per-sighting work."""
        opened, closed_before = self.open, self.closed_before
        window, win = None, None
        for s in sightings:
            ts = s.ts
            wi = ts // WINDOW_MS
            if wi != window:
                if wi < closed_before:
                    self.late += 1
                    continue
                window, win = wi, opened.get(wi)
                if win is None:
                    win = opened[wi] = {}
            assert win is not None
            cur = win.get(s.device)
            if cur is None:
                seq = -1 if s.seq is None else s.seq
                win[s.device] = [ts, seq, ts, seq, s.rssi, s.fingerprint, s.randomized]
                continue
            if ts < cur[0]:
                cur[0], cur[1], cur[5] = ts, -1 if s.seq is None else s.seq, s.fingerprint
            if ts >= cur[2]:
                cur[2], cur[3] = ts, -1 if s.seq is None else s.seq
            if s.rssi > cur[4]:
                cur[4] = s.rssi

    def calibrate(self, calibration: PeopleCalibration) -> None:
        """Estimate people with ``calibration`` (and count at its floor) from the next window
        closed on; a no-op when it is the one in use."""
        if calibration is not self.calibration:
            self.calibration = calibration
            self.params = dataclasses.replace(self.params, floor=calibration.floor)

    def close(self, until_ts: int) -> list[PeopleWindow]:
        """Close every window that ends at or before ``until_ts`` (the watermark), in order.
        Windows in which nothing was heard are not reported."""
        end = until_ts // WINDOW_MS
        out = [self._close_one(wi) for wi in sorted(k for k in self.open if k < end)]
        self.closed_before = max(self.closed_before, end)
        return out

    # ---- internals ----------------------------------------------------------------------

    def _close_one(self, wi: int) -> PeopleWindow:
        p = self.params
        win = self.open.pop(wi)
        start = wi * WINDOW_MS
        day = start // DAY_MS
        if day != self.day:
            self.day = day
            self.link.clear()
            self.link_seen.clear()
            self.chains.clear()
            self.by_fp.clear()
        self._expire(start)
        self.active += 1
        floor = p.floor
        f: dict[str, float] = dict.fromkeys(COUNTS, 0)
        chain_rssi: dict[int, int] = {}
        rnd = sorted((v[0], d) for d, v in win.items() if v[6])
        for _, d in rnd:
            v = win[d]
            c = self._associate(d, v)
            ch = self.chains[c]
            chain_rssi[c] = max(chain_rssi.get(c, -999), v[4])
            if v[2] >= ch.last_ts:
                ch.last_ts, ch.last_seq, ch.last_rssi = v[2], v[3], v[4]
            self.link_seen[d] = v[2]
            if v[4] >= floor:
                f["random"] += 1
        for c, m in chain_rssi.items():
            ch = self.chains[c]
            if m >= floor:
                f["chains"] += 1
                if ch.last_window >= wi - p.persist_windows:
                    f["chains_p"] += 1
            ch.last_window = wi
        lam = 0.5 ** (1.0 / p.halflife_windows)
        for d, v in win.items():
            if v[6]:
                continue
            st = self.stable.get(d)
            if st is None:
                st = self.stable[d] = _Stable(0.0, self.active)
            st.score = st.score * lam ** (self.active - st.at) + 1.0
            st.at = self.active
            if v[4] >= floor:
                f["stable"] += 1
                if st.score < p.present_windows:
                    f["stable_np"] += 1
                    if st.last_window >= wi - p.persist_windows:
                        f["stable_np_p"] += 1
            st.last_window = wi
        f["macs"] = f["stable"] + f["random"]
        before = self.prev[1] if self.prev[0] == wi - 1 else {}
        self.prev = (wi, dict(f))
        for name in COUNTS:
            f[f"{name}_s2"] = (f[name] + before.get(name, 0)) / 2
        people = None if self.calibration is None else estimate(self.calibration, f)
        return PeopleWindow(start, f, people)

    def _associate(self, d: int, v: list[int]) -> int:
        """The chain of randomised device ``d`` (first heard at v[0] with seq v[1])."""
        c = self.link.get(d)
        if c is not None:
            return c
        p = self.params
        t0, s0, rssi, fp = v[0], v[1], v[4], v[5]
        best, best_key = None, None
        cands = self.by_fp.get(fp)
        if cands and s0 >= 0:
            alive = []
            for cid in cands:
                ch = self.chains.get(cid)
                if ch is None or t0 - ch.last_ts > p.horizon_ms:
                    continue
                alive.append(cid)
                gap = t0 - ch.last_ts
                if gap < 0 or gap > p.gap_ms or ch.last_seq < 0:
                    continue
                step = (s0 - ch.last_seq) % SEQ_MOD
                if step < 1 or step > p.max_seq_step or abs(rssi - ch.last_rssi) > p.max_rssi_jump:
                    continue
                key = (step, gap)
                if best_key is None or key < best_key:
                    best, best_key = cid, key
            self.by_fp[fp] = alive
        if best is None:
            best = self.next_chain
            self.next_chain += 1
            self.chains[best] = _Chain(t0, v[1], rssi, fp)
            self.by_fp.setdefault(fp, []).append(best)
        self.link[d] = best
        return best

    def _expire(self, now_ts: int) -> None:
        p = self.params
        if self.link_seen and len(self.link_seen) > 4096:
            old = [d for d, t in self.link_seen.items() if now_ts - t > p.horizon_ms]
            for d in old:
                del self.link_seen[d]
                self.link.pop(d, None)
            dead = [c for c, ch in self.chains.items() if now_ts - ch.last_ts > p.horizon_ms]
            for c in dead:
                del self.chains[c]
        if self.active % 288 == 0 and self.stable:
            lam = 0.5 ** (1.0 / p.halflife_windows)
            gone = [d for d, st in self.stable.items() if st.score * lam ** (self.active - st.at) < 0.5]
            for d in gone:
                del self.stable[d]


def fit_calibration(
    X: np.ndarray,
    y: np.ndarray,
    names: tuple[str, ...],
    *,
    floor: int = Params.floor,
    nonneg: bool = True,
    iters: int = 200,
) -> PeopleCalibration:
    """Least squares ``y ~ b + log1p(X) @ a`` with ``a >= 0`` (projected coordinate descent;
    a handful of columns, so exact enough), the intercept free; ``X`` holds the window
    counts of ``names``, counted at ``floor``."""
    X = np.log1p(np.asarray(X, float))
    y = np.asarray(y, float)
    n, k = X.shape
    A = np.c_[X, np.ones(n)]
    coef = np.linalg.lstsq(A, y, rcond=None)[0]
    if nonneg and (coef[:k] < 0).any():
        G = A.T @ A
        h = A.T @ y
        coef = np.maximum(coef, 0.0)
        coef[k] = (h[k] - G[k, :k] @ coef[:k]) / G[k, k]
        for _ in range(iters):
            for j in range(k + 1):
                if G[j, j] == 0:
                    continue
                val = coef[j] + (h[j] - G[j] @ coef) / G[j, j]
                coef[j] = val if j == k else max(0.0, val)
    weights = {nm: float(c) for nm, c in zip(names, coef[:k], strict=True)}
    return PeopleCalibration(floor=floor, intercept=float(coef[k]), coef=weights)
