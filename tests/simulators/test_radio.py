"""The radio model separates inside from outside at the catalog's visit threshold.

Where each sighting's phone really was comes from the truth (its owner's store visits),
not from the radio model: a sighting at a store's sensor is "inside" if its owner was in
that store at that moment, "corridor" if in no store, "other store" if in another one.
"""

from __future__ import annotations

import bisect
from collections import defaultdict

import numpy as np

from simulators.radio import mean_rssi
from simulators.scenario import Radio


def test_path_loss_by_hand() -> None:
    radio = Radio()
    # -40 dBm at 1 m, exponent 2.7: 10 m costs 27 dB; each wall 8 dB more
    got = mean_rssi(radio, np.array([1.0, 10.0, 10.0, 100.0]), np.array([0, 0, 2, 0]))
    assert np.allclose(got, [-40.0, -67.0, -83.0, -94.0])


def test_inside_sightings_are_strong_and_outside_ones_weak(base_run) -> None:
    truth = base_run.sim.truth
    catalog = base_run.sim.catalog
    visits = defaultdict(list)
    for v in truth.visits:
        visits[v.person_id].append((v.start_ts, v.end_ts, v.store_id))
    for vs in visits.values():
        vs.sort()
    rssi = defaultdict(list)
    for sensor_id, o, _ in base_run.observations():
        store = catalog.sensor(sensor_id).store_id
        if store is None:
            continue
        vs = visits.get(truth.mac_owner[o.mac], [])
        i = bisect.bisect_right(vs, (o.ts, float("inf"), "")) - 1
        where = vs[i][2] if i >= 0 and vs[i][0] <= o.ts < vs[i][1] else None
        kind = "inside" if where == store else "corridor" if where is None else "other"
        rssi[kind].append(o.rssi)
    share = {k: float(np.mean(np.array(v) >= -70)) for k, v in rssi.items()}
    print({k: (len(v), round(share[k], 4)) for k, v in rssi.items()})
    assert min(len(v) for v in rssi.values()) > 5000
    assert share["inside"] > 0.95  # measured 0.99
    assert share["corridor"] < 0.06  # measured 0.03
    assert share["other"] < 0.08  # measured 0.05
    assert all(r >= -95 for v in rssi.values() for r in v)
