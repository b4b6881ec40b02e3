"""The mall simulator: a seeded scenario becomes the three input topics and their truth.

Reads a ``Scenario``; writes nothing (``events()`` yields messages; a source or a Kafka
writer takes them on). Deterministic by seed: the same scenario, seed and ``now`` give
the same bytes, in the same order (every random draw comes from a numpy Generator seeded
by ``(seed, stream, site)``; there is no global random state).

Sightings come from the people's phones and, when the scenario has them, from devices
that never leave (``simulators.fixed``: store equipment, staff phones), which the truth
keeps apart from people (``Truth.devices``).

Everything is computed on first use of ``events()`` or ``truth`` and kept in memory
(a few hundred MB at most for a day of a few malls); ``truth`` is therefore available
before, during and after iterating ``events()``. ``SimEvent.ts`` is when the message is
written: a sighting's time for a single-sighting sensor, the report time for a batched
one, a transaction's or member event's own ``ts`` (a repeated transaction's second send:
when it is sent again, its value unchanged); events come in non-decreasing ``ts``.

>>> from simulators.scenario import Scenario
>>> sim = MallSimulator(Scenario(name="t", start_date="2025-03-14", stores_per_mall=2,
...                              shoppers_per_mall_per_day=40), seed=7)
>>> [s.sensor_id for s in sim.catalog.sensors]
['AP-0101', 'AP-0102', 'AP-01C1']
>>> events = list(sim.events())
>>> sorted({e.topic for e in events}), all(a.ts <= b.ts for a, b in zip(events, events[1:]))
(['members.events', 'pos.transactions', 'wifi.probes'], True)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import NamedTuple

import msgspec
import numpy as np

from connectors.catalog import Catalog
from simulators import badrecords
from simulators.fixed import FixedDevices, draw_fixed
from simulators.geometry import Site, build_catalog, build_sites
from simulators.members import ERASE_MINUTE, plan_erasures, plan_members
from simulators.messy import Mess, mess_up, repeats
from simulators.people import (
    Population,
    Trips,
    arrivals,
    day_factor,
    draw_population,
    hourly_weights,
    plan_trips,
)
from simulators.phones import FINGERPRINTS, MODELS, Frames, MacTable, probe_frames
from simulators.pos import StoreInfo, TrueSale, Windows, encode_sale, make_sales, redeem_points
from simulators.radio import Heard, Messages, SensorSetup, hear, probe_messages
from simulators.scenario import FlashCrowd, PaymentOutage, SalesDrop, Scenario, SensorDark
from simulators.truth import TrueDevice, TruePerson, TrueVisit, Truth
from storepulse.errors import ConfigError

PROBES, SALES, MEMBERS = "wifi.probes", "pos.transactions", "members.events"
TOPICS = (PROBES, SALES, MEMBERS)
POOL_FACTOR = 2.5  # people per site per busiest day, so regulars come back on later days
_STREAM = {"sensors": 1, "arrivals": 2, "people": 3, "paths": 4, "radio": 5, "pos": 6,
           "members": 7, "bad": 8, "macs": 9, "messy": 10, "erase": 11,
           "loyalty": 12, "fixed": 13, "capture": 14}


class SimEvent(NamedTuple):
    """One message: logical topic, key, value (JSON bytes) and write time (epoch ms)."""

    topic: str
    key: bytes
    value: bytes
    ts: int


@dataclass
class _Built:
    ts: np.ndarray
    topic: list[str]
    key: list[bytes]
    value: list[bytes]
    truth: Truth
    sightings: int


class MallSimulator:
    """Simulate a scenario's sites and days. ``now`` resolves ``start_date: yesterday``."""

    def __init__(self, scenario: Scenario, seed: int, *, now: datetime | None = None) -> None:
        self.scenario = scenario
        self.seed = int(seed)
        self.dates = scenario.dates(now)
        self._now = now
        self.sites: list[Site] = build_sites(scenario)
        self.catalog: Catalog = build_catalog(scenario, self.sites)
        self._check_incidents()

    def _rng(self, stream: str, site: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, _STREAM[stream], site])

    def _check_incidents(self) -> None:
        for i, inc in enumerate(self.scenario.incidents):
            where = f"scenario {self.scenario.name}: incidents[{i}]"
            if isinstance(inc, SalesDrop) and self.catalog.store(inc.store) is None:
                raise ConfigError(f"{where}: unknown store {inc.store!r}")
            if isinstance(inc, SensorDark) and self.catalog.sensor(inc.sensor) is None:
                raise ConfigError(f"{where}: unknown sensor {inc.sensor!r}")
            if isinstance(inc, FlashCrowd) and self.catalog.mall(inc.mall) is None:
                raise ConfigError(f"{where}: unknown mall {inc.mall!r}")

    def window(self, index: int) -> tuple[int, int]:
        """Epoch ms ``[start, end)`` of incident ``index``."""
        return self.scenario.incidents[index].window_ms(self.scenario, self._now)

    # ---- public ------------------------------------------------------------------------

    def events(self) -> Iterator[SimEvent]:
        """Every message of the run, in non-decreasing write time."""
        b = self._built
        for i, ts in enumerate(b.ts.tolist()):
            yield SimEvent(b.topic[i], b.key[i], b.value[i], ts)

    @property
    def truth(self) -> Truth:
        return self._built.truth

    @property
    def sightings(self) -> int:
        """How many sightings (single or inside batches) the sensors reported."""
        return self._built.sightings

    # ---- the run -----------------------------------------------------------------------

    @cached_property
    def _built(self) -> _Built:
        sc = self.scenario
        macs = MacTable(self._rng("macs"))
        setups = self._sensor_setups()
        windows = self._windows()
        flash = [(*self.window(i), inc.multiplier, inc.mall) for i, inc in enumerate(sc.incidents)
                 if isinstance(inc, FlashCrowd)]
        sales: list[tuple[TrueSale, bytes]] = []
        repeat_at: list[tuple[int, int]] = []  # (index in sales, write ts) of second sends
        mess = Mess.of(sc)
        member_events: list[tuple[int, str, bytes]] = []
        visits: list[TrueVisit] = []
        people_truth: list[TruePerson] = []
        probes = Messages([], [], [])
        batched_flags: list[bool] = []
        sightings = 0
        next_member = 1
        fps = (FINGERPRINTS if sc.mac_behaviour == "realistic"
               else tuple((m.ie, m.vendor_ie) for m in MODELS))
        fp_json = [(msgspec.json.encode(list(ie)), msgspec.json.encode(list(vendor)))
                   for ie, vendor in fps]
        devices: list[TrueDevice] = []
        for si, site in enumerate(self.sites):
            day_trips, hours = [], []
            rng = self._rng("arrivals", si)
            expected = (sc.street_passers_per_store_per_day if site.street
                        else sc.shoppers_per_mall_per_day)
            weights = hourly_weights(site.open_min, site.close_min)
            for d, day in enumerate(self.dates):
                open_ms = sc.local_ms(day, site.open_min)
                close_ms = sc.local_ms(day, site.close_min)
                hours.append((open_ms, close_ms))
                arr = arrivals(rng, open_ms=open_ms, weights=weights,
                               expected=expected * day_factor(sc, day),
                               flash=[(a, z, m) for a, z, m, mall in flash if mall == site.mall_id])
                day_trips.append((d, arr, close_ms))
            busiest = max(len(a) for _, a, _ in day_trips)
            pool = busiest if sc.days == 1 else int(np.ceil(busiest * POOL_FACTOR))
            people = draw_population(self._rng("people", si), sc, site, max(pool, 1), macs)
            prng = self._rng("people", 1000 + si)
            chosen = [(d, arr, prng.choice(len(people), size=len(arr), replace=False,
                                           p=people.loyalty / people.loyalty.sum()), close)
                      for d, arr, close in day_trips]
            trips = plan_trips(self._rng("paths", si), sc, site, chosen)
            mac_bytes = [m.encode() for m in macs.text]
            plan = plan_members(
                self._rng("members", si), people=people, trips=trips, store_ids=site.store_ids,
                mac_text=mac_bytes, dates=self.dates, sync_ms=sc.local_ms(self.dates[0], 0),
                open_close_ms=hours, first_number=next_member)
            next_member += sum(1 for m in plan.member_id if m)
            member_events += plan.events
            for p in np.unique(trips.person).tolist():
                people_truth.append(TruePerson(
                    person_id=people.person_id[p], site=site.site_id,
                    has_phone=bool(people.has_phone[p]), randomized=bool(people.randomized[p]),
                    member_id=plan.member_id[p]))
            v_person = trips.person[trips.visit_trip]
            for v in range(len(trips.visit_trip)):
                p = int(v_person[v])
                visits.append(TrueVisit(
                    mall_id=site.site_id, store_id=site.store_ids[int(trips.visit_store[v])],
                    person_id=people.person_id[p], has_phone=bool(people.has_phone[p]),
                    randomized=bool(people.randomized[p]), start_ts=int(trips.visit_start[v]),
                    end_ts=int(trips.visit_end[v])))
            stores = [StoreInfo(s, self.catalog.store(s).merchant_id,  # type: ignore[union-attr]
                                self.catalog.store(s).category,  # type: ignore[union-attr]
                                [c - 120_000 for _, c in hours]) for s in site.store_ids]
            made = make_sales(
                self._rng("pos", si), stores=stores, visit_store=trips.visit_store,
                visit_start=trips.visit_start, visit_end=trips.visit_end,
                visit_day=trips.day[trips.visit_trip],
                member_id=[plan.member_id[int(p)] for p in v_person],
                member_since=plan.member_since[v_person], refund_share=sc.refund_share,
                windows=windows)
            if not mess.off:
                mrng = self._rng("messy", si)
                made = mess_up(mrng, made, mess=mess, windows=windows,
                               hours=[(a, z - 120_000) for a, z in hours])
                repeat_at += [(len(sales) + i, w)
                              for i, w in repeats(mrng, [s.ts for s, _ in made], mess=mess)]
            if sc.loyalty:
                made = redeem_points(self._rng("loyalty", si), made, programmes=sc.loyalty,
                                     merchant_of={s.store_id: s.merchant_id for s in stores},
                                     share=sc.redeem_share)
            if sc.erase_share:
                member_events += plan_erasures(
                    self._rng("erase", si), member_ids=plan.member_id, sales=[s for s, _ in made],
                    nights_ms=[sc.local_ms(d, ERASE_MINUTE) for d in self.dates], share=sc.erase_share)
            merchants = {s.store_id: s.merchant_id for s in stores}
            sales += [(s, encode_sale(s, merchants[s.store_id], items)) for s, items in made]
            fixed = None
            if sc.store_devices_per_store or sc.staff_phones_per_store:
                fixed = draw_fixed(self._rng("fixed", si), sc, site, macs)
                devices += [TrueDevice(d, site.site_id, site.store_ids[int(s)], k, bool(r))
                            for d, k, s, r in zip(fixed.device_id, fixed.kind,
                                                  fixed.store.tolist(), fixed.randomized.tolist(),
                                                  strict=True)]
            n_site, flags = self._probes(si, site, people, trips, macs, setups, fp_json, probes,
                                         fixed)
            sightings += n_site
            batched_flags += flags
        built = self._assemble(probes, batched_flags, sales, member_events, visits, sightings,
                               repeat_at)
        built.truth.mac_owner = dict(zip(macs.text, macs.owner, strict=True))
        built.truth.people = {p.person_id: p for p in people_truth}
        built.truth.devices = {d.device_id: d for d in devices}
        return built

    def _probes(self, si: int, site: Site, people: Population, trips: Trips, macs: MacTable,
                setups: dict[str, SensorSetup], fp_json: list[tuple[bytes, bytes]],
                out: Messages, fixed: FixedDevices | None = None) -> tuple[int, list[bool]]:
        phone = people.has_phone[trips.person]
        t_idx = np.flatnonzero(phone)
        per = trips.person[t_idx]
        rng = self._rng("radio", si)
        frames = probe_frames(
            rng, arrive_ms=trips.arrive[t_idx], depart_ms=trips.depart[t_idx],
            mean_interval_s=people.mean_interval_s[per], randomized=people.randomized[per],
            stable_mac=people.stable_mac[per], rotation_s=people.rotation_s[per],
            rotation_phase_s=people.rotation_phase_s[per],
            owner=[people.person_id[p] for p in per.tolist()], macs=macs,
            per_burst=people.per_burst[per], seq_restart=people.seq_restart[per])
        trip = t_idx[frames.trip]
        x, y, region = trips.position(trip, frames.ts)
        person = trips.person[trip]
        offset = people.device_offset_db[person]
        fingerprint = people.fingerprint[person]
        if fixed is not None and len(fixed):
            ff, dev = self._fixed_frames(si, site, fixed, macs)
            assert ff.burst is not None  # probe_frames always says which burst
            fx, fy, fregion = fixed.positions(self._rng("fixed", 2000 + si), site, dev, ff.burst)
            x, y, region = (np.concatenate(a) for a in ((x, fx), (y, fy), (region, fregion)))
            offset = np.concatenate([offset, fixed.device_offset_db[dev]])
            fingerprint = np.concatenate([fingerprint, fixed.fingerprint[dev]])
            frames = Frames(trip=np.concatenate([frames.trip, -1 - dev]),
                            ts=np.concatenate([frames.ts, ff.ts]),
                            seq=np.concatenate([frames.seq, ff.seq]),
                            ch=np.concatenate([frames.ch, ff.ch]),
                            mac=np.concatenate([frames.mac, ff.mac]))
        heard = hear(rng, self.scenario.radio, x=x, y=y, region=region,
                     device_offset_db=offset, sensor_xy=site.sensor_xy, walls=site.walls)
        if self.scenario.radio.capture_share < 1:
            keep = (self._rng("capture", si).random(len(heard.frame))
                    < self.scenario.radio.capture_share)
            heard = Heard(heard.frame[keep], heard.sensor[keep], heard.rssi[keep])
        mac_bytes = [m.encode() for m in macs.text]
        flags: list[bool] = []
        order = np.argsort(heard.sensor, kind="stable")
        bounds = np.searchsorted(heard.sensor[order], np.arange(len(site.sensor_ids) + 1))
        total = 0
        for s, sensor_id in enumerate(site.sensor_ids):
            sel = order[bounds[s]:bounds[s + 1]]
            f = heard.frame[sel]
            msgs = probe_messages(
                setups[sensor_id], ts=frames.ts[f], rssi=heard.rssi[sel], mac=frames.mac[f],
                seq=frames.seq[f], ch=frames.ch[f], model=fingerprint[f],
                mac_text=mac_bytes, fp_json=fp_json,
                batch_interval_ms=int(self.scenario.batch_interval_s * 1000))
            out.extend(msgs)
            flags += [setups[sensor_id].batched] * len(msgs.ts)
            total += msgs.sightings
        return total, flags

    def _fixed_frames(self, si: int, site: Site, fixed: FixedDevices,
                      macs: MacTable) -> tuple[Frames, np.ndarray]:
        """Probe frames of a site's fixed devices on every day, and the device of each."""
        sc = self.scenario
        days = [(sc.local_ms(d, 0), sc.local_ms(d, site.open_min), sc.local_ms(d, site.close_min),
                 sc.local_ms(d, 24 * 60)) for d in self.dates]
        dev, start, end = fixed.windows(days)
        frames = probe_frames(
            self._rng("fixed", 1000 + si), arrive_ms=start, depart_ms=end,
            mean_interval_s=fixed.mean_interval_s[dev], randomized=fixed.randomized[dev],
            stable_mac=fixed.stable_mac[dev], rotation_s=fixed.rotation_s[dev],
            rotation_phase_s=fixed.rotation_phase_s[dev],
            owner=[fixed.device_id[k] for k in dev.tolist()], macs=macs,
            per_burst=fixed.per_burst[dev], seq_restart=fixed.seq_restart[dev])
        return frames, dev[frames.trip]

    def _sensor_setups(self) -> dict[str, SensorSetup]:
        """Which sensors batch and which add sniffer extras: exactly the scenario's shares
        (rounded) of each site's sensors, chosen at random."""
        sc = self.scenario
        rng = self._rng("sensors")
        interval = int(sc.batch_interval_s * 1000)
        out = {}
        for site in self.sites:
            n = len(site.sensor_ids)
            batched = rng.permutation(n) < round(sc.batched_sensor_share * n)
            extras = rng.permutation(n) < round(sc.sniffer_extras_share * n)
            phase = rng.integers(0, interval, n)
            for s, sensor_id in enumerate(site.sensor_ids):
                dark = [self.window(i) for i, inc in enumerate(sc.incidents)
                        if isinstance(inc, SensorDark) and inc.sensor == sensor_id]
                out[sensor_id] = SensorSetup(sensor_id=sensor_id, batched=bool(batched[s]),
                                             extras=bool(extras[s]), phase_ms=int(phase[s]),
                                             dark=dark)
        return out

    def _windows(self) -> Windows:
        drops: dict[str, list[tuple[int, int, float]]] = {}
        outages: dict[str, list[tuple[int, int]]] = {}
        for i, inc in enumerate(self.scenario.incidents):
            if isinstance(inc, SalesDrop):
                drops.setdefault(inc.store, []).append((*self.window(i), inc.factor))
            elif isinstance(inc, PaymentOutage):
                outages.setdefault(inc.payment, []).append(self.window(i))
        return Windows(sales_drop=drops, outage=outages)

    def _assemble(self, probes: Messages, batched_flags: list[bool],
                  sales: list[tuple[TrueSale, bytes]], member_events: list[tuple[int, str, bytes]],
                  visits: list[TrueVisit], sightings: int,
                  repeat_at: list[tuple[int, int]]) -> _Built:
        # Second sends of repeated transactions go last, so without any the order is as before.
        ts = (probes.ts + [s.ts for s, _ in sales] + [t for t, _, _ in member_events]
              + [w for _, w in repeat_at])
        topic = ([PROBES] * len(probes.ts) + [SALES] * len(sales)
                 + [MEMBERS] * len(member_events) + [SALES] * len(repeat_at))
        key = probes.key + [s.store_id.encode() for s, _ in sales] + [
            m.encode() for _, m, _ in member_events] + [
            sales[k][0].store_id.encode() for k, _ in repeat_at]
        value = (probes.value + [v for _, v in sales] + [v for _, _, v in member_events]
                 + [sales[k][1] for k, _ in repeat_at])
        batched = np.array(batched_flags + [False] * (len(ts) - len(batched_flags)), dtype=bool)
        order = np.argsort(np.array(ts, dtype=np.int64), kind="stable")
        topic = [topic[i] for i in order.tolist()]
        key = [key[i] for i in order.tolist()]
        value = [value[i] for i in order.tolist()]
        batched = batched[order]
        sale_at = np.full(len(ts), -1, dtype=np.int64)
        sale_at[len(probes.ts) + np.arange(len(sales))] = np.arange(len(sales))
        sale_at[len(ts) - len(repeat_at):] = [k for k, _ in repeat_at]
        sale_at = sale_at[order]
        bad, replaced = badrecords.inject(self._rng("bad"), topic=topic, batched=batched,
                                          key=key, value=value,
                                          share=self.scenario.bad_record_share)
        # A transaction reached the stream if one of its sends was not replaced.
        sends = np.bincount(sale_at[sale_at >= 0], minlength=len(sales))
        kept = sends - np.bincount(sale_at[[i for i in replaced if sale_at[i] >= 0]],
                                   minlength=len(sales))
        true_sales = [s for k, (s, _) in enumerate(sales) if kept[k] > 0]
        visits.sort(key=lambda v: (v.start_ts, v.store_id, v.person_id))
        truth = Truth(visits=visits, sales=true_sales, bad=bad,
                      transactions=[v for t, v in zip(topic, value, strict=True) if t == SALES],
                      member_events=[v for t, v in zip(topic, value, strict=True) if t == MEMBERS],
                      repeats=int(np.maximum(kept - 1, 0).sum()))
        return _Built(ts=np.array(ts, dtype=np.int64)[order], topic=topic, key=key, value=value,
                      truth=truth, sightings=sightings)
