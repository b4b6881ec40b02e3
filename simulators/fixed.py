"""Devices that never leave: store equipment and staff phones.

Reads the scenario and a site's floor plan; writes nothing. Each store gets a Poisson
number of pieces of equipment (mean ``store_devices_per_store``: POS terminals, tablets,
signage) that stand at one spot in the store and probe around the clock (the whole local
day, closed hours included), and of staff phones (mean ``staff_phones_per_store``) that
are in the store from opening to closing and move about it (a new spot every burst).
Equipment probes as ``phones.EQUIPMENT`` (mostly a stable MAC); a staff phone is a phone
of a ``phones.REALISTIC_MODELS`` model and probes as that model does. Guarantees: a fixed
device is no person (its id is ``<site>/F<n>``, never a ``person_id``), every frame of
it lies inside its store and inside its window of the day.

>>> from simulators.scenario import Scenario
>>> from simulators.geometry import build_sites
>>> sc = Scenario(name="t", start_date="2025-03-14", stores_per_mall=3,
...               store_devices_per_store=2, staff_phones_per_store=1)
>>> site = build_sites(sc)[0]
>>> d = draw_fixed(np.random.default_rng(1), sc, site, MacTable(np.random.default_rng(2)))
>>> len(d) > 0, d.device_id[0], sorted(set(d.kind))
(True, 'MALL-01/F000', ['equipment', 'staff'])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulators.geometry import Site
from simulators.phones import (
    DEVICE_MODELS,
    EQUIPMENT,
    FP_FIRST,
    PHONE_SHARES,
    MacTable,
    stable_macs,
)
from simulators.scenario import Scenario

EQUIPMENT_MODEL = DEVICE_MODELS.index(EQUIPMENT)
STAFF_INTERVAL_FACTOR = 2.0  # a phone on the store's WiFi probes less than a shopper's
EDGE_M = 0.5  # devices stay this far inside their store's walls


@dataclass
class FixedDevices:
    """The fixed devices of one site, one row each."""

    device_id: list[str]
    kind: list[str]  # "equipment" or "staff"
    store: np.ndarray  # site-local shop index
    model: np.ndarray  # index into phones.DEVICE_MODELS
    randomized: np.ndarray
    per_burst: np.ndarray
    seq_restart: np.ndarray
    fingerprint: np.ndarray  # index into phones.FINGERPRINTS
    stable_mac: np.ndarray  # MAC-table index, -1 when randomised
    mean_interval_s: np.ndarray
    rotation_s: np.ndarray
    rotation_phase_s: np.ndarray
    device_offset_db: np.ndarray
    x: np.ndarray  # equipment's spot (a staff phone moves: see ``positions``)
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.device_id)

    def windows(self, days: list[tuple[int, int, int, int]]) -> tuple[np.ndarray, ...]:
        """``(device, start_ms, end_ms)`` of every device's presence on every day, given
        each day's ``(midnight, open, close, next midnight)`` in epoch ms."""
        staff = np.array([k == "staff" for k in self.kind], dtype=bool)
        dev = np.tile(np.arange(len(self), dtype=np.int64), len(days))
        start = np.concatenate([np.where(staff, o, m) for m, o, _, _ in days]).astype(np.int64)
        end = np.concatenate([np.where(staff, c, n) for _, _, c, n in days]).astype(np.int64)
        return dev, start, end

    def positions(self, rng: np.random.Generator, site: Site, dev: np.ndarray,
                  burst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x, y and region of frames of devices ``dev`` in bursts ``burst``: equipment at
        its spot, a staff phone at a random spot of its store per burst."""
        x, y = self.x[dev].copy(), self.y[dev].copy()
        staff = np.array([k == "staff" for k in self.kind], dtype=bool)[dev]
        if staff.any():
            ub, first = np.unique(burst[staff], return_inverse=True)
            rects = site.rects[self.store[dev[staff]]]
            u = rng.random((len(ub), 2))[first.ravel()]
            x[staff] = rects[:, 0] + EDGE_M + u[:, 0] * (rects[:, 2] - rects[:, 0] - 2 * EDGE_M)
            y[staff] = rects[:, 1] + EDGE_M + u[:, 1] * (rects[:, 3] - rects[:, 1] - 2 * EDGE_M)
        return x, y, self.store[dev] + 1


def draw_fixed(rng: np.random.Generator, scenario: Scenario, site: Site,
               macs: MacTable) -> FixedDevices:
    """The fixed devices of ``site``; their MACs go into ``macs`` owned by their ids."""
    n_stores = len(site.store_ids)
    n_equip = rng.poisson(scenario.store_devices_per_store, n_stores)
    n_staff = rng.poisson(scenario.staff_phones_per_store, n_stores)
    store = np.concatenate([np.repeat(np.arange(n_stores), n_equip),
                            np.repeat(np.arange(n_stores), n_staff)]).astype(np.int64)
    n = len(store)
    staff = np.arange(n) >= n_equip.sum()
    model = np.where(staff, rng.choice(len(PHONE_SHARES), size=n, p=PHONE_SHARES),
                     EQUIPMENT_MODEL)
    table = DEVICE_MODELS
    stable_share = np.array([m.stable_share for m in table])[model]
    randomized = rng.random(n) >= stable_share
    ids = [f"{site.site_id}/F{i:03d}" for i in range(n)]
    stable_mac = np.full(n, -1, dtype=np.int64)
    stable = ~randomized
    stable_mac[stable] = macs.add(stable_macs(rng, model[stable], table),
                                  [ids[i] for i in np.flatnonzero(stable).tolist()])
    sigma = scenario.probe_interval_sigma
    factor = np.array([m.interval_factor for m in table])[model] * np.where(
        staff, STAFF_INTERVAL_FACTOR, 1.0)
    mean_interval = np.maximum(2.0, scenario.probe_interval_s * factor
                               * rng.lognormal(-sigma * sigma / 2, sigma, n))
    rotation = np.maximum(60.0, np.array([m.rotation_min for m in table])[model] * 60.0
                          * rng.lognormal(0.0, scenario.mac_rotation_sigma, n))
    rects = site.rects[store]
    u = rng.random((n, 2))
    variants = np.diff(FP_FIRST)[model]
    return FixedDevices(
        device_id=ids,
        kind=["staff" if s else "equipment" for s in staff.tolist()],
        store=store,
        model=model,
        randomized=randomized,
        per_burst=np.array([m.rotation == "burst" for m in table])[model],
        seq_restart=np.array([m.seq == "restart" for m in table])[model],
        fingerprint=FP_FIRST[model] + (rng.random(n) * variants).astype(np.int64),
        stable_mac=stable_mac,
        mean_interval_s=mean_interval,
        rotation_s=rotation,
        rotation_phase_s=rng.random(n) * rotation,
        device_offset_db=rng.normal(0.0, scenario.radio.device_offset_db, n),
        x=rects[:, 0] + EDGE_M + u[:, 0] * (rects[:, 2] - rects[:, 0] - 2 * EDGE_M),
        y=rects[:, 1] + EDGE_M + u[:, 1] * (rects[:, 3] - rects[:, 1] - 2 * EDGE_M),
    )
