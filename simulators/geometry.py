"""Floor plans of the simulated sites, in local metres, and the catalog that describes them.

A mall is one straight corridor with shops on both sides; a street store is one shop on
a pavement. Positions are metres east (x) and north (y) of the site's origin and become
lat/lon in the catalog. Reads the scenario; writes nothing. Guarantees: ids are stable
for a given scenario (``MALL-01``, store ``S0103``, store sensor ``AP-0103``, corridor
sensor ``AP-01C1``, street store ``SS01`` with sensor ``AP-SS01``), every store has one
sensor inside (zone ``<store>-floor``), every mall has corridor sensors (zone
``<mall>-corridor``), and ``walls[region, sensor]`` counts the walls between a region and
a sensor (region 0 is the corridor or pavement, region ``i + 1`` is store ``i``).

>>> from simulators.scenario import Scenario
>>> sites = build_sites(Scenario(name="x", stores_per_mall=4, street_stores=1))
>>> [s.site_id for s in sites], sites[0].store_ids
(['MALL-01', 'SS01'], ('S0101', 'S0102', 'S0103', 'S0104'))
>>> sites[0].sensor_ids
('AP-0101', 'AP-0102', 'AP-0103', 'AP-0104', 'AP-01C1')
>>> sites[0].walls.tolist()  # rows: corridor, S0101..S0104 (S0102 is across from S0101)
[[1, 1, 1, 1, 0], [0, 2, 1, 3, 1], [2, 0, 3, 1, 1], [1, 3, 0, 2, 1], [3, 1, 2, 0, 1]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from connectors.catalog import Campaign, Catalog, Mall, Sensor, Store
from simulators.pos import CURRENCY
from simulators.scenario import Scenario, parse_hours
from simulators.shops import CATEGORIES, MALL_CATEGORY_ORDER, STREET_CATEGORY_ORDER, loyalty_merchants, merchant_of

SHOP_WIDTH_M = 12.0
SHOP_DEPTH_M = 15.0
CORRIDOR_M = 8.0
STREET_SHOP_WIDTH_M = 8.0
STREET_SHOP_DEPTH_M = 12.0
PAVEMENT_M = 4.0
STREET_WALK_M = 90.0  # pedestrians are simulated this far either side of a street shop
CORRIDOR_SENSOR_SPACING_M = 25.0
METRES_PER_DEG_LAT = 111_320.0
MAX_WALLS = 4


@dataclass(frozen=True)
class Site:
    """One place people go: a mall, or a street store on its own."""

    site_id: str
    mall_id: str | None
    street: bool
    lat0: float
    lon0: float
    open_min: int
    close_min: int
    store_ids: tuple[str, ...]
    categories: tuple[str, ...]
    rects: np.ndarray  # (n, 4): x0, y0, x1, y1 of each shop
    doors: np.ndarray  # (n, 2): the middle of each shop's front, on the walkway side
    lane_y: float  # middle of the corridor or pavement
    lane_half_m: float  # people walk within this distance of lane_y
    x_min: float  # the walkway's ends (mall entrances, or where a pedestrian appears)
    x_max: float
    sensor_ids: tuple[str, ...]
    sensor_store: tuple[str | None, ...]
    sensor_xy: np.ndarray  # (S, 2)
    walls: np.ndarray  # (n + 1, S) walls between region and sensor

    def latlon(self, x: float, y: float) -> tuple[float, float]:
        """Local metres to WGS84 degrees (equirectangular; fine over a few hundred metres)."""
        lat = self.lat0 + y / METRES_PER_DEG_LAT
        lon = self.lon0 + x / (METRES_PER_DEG_LAT * math.cos(math.radians(self.lat0)))
        return round(lat, 7), round(lon, 7)


def build_sites(scenario: Scenario) -> list[Site]:
    """The malls, then the street stores, of a scenario."""
    sites = [_mall(scenario, m) for m in range(1, scenario.malls + 1)]
    sites += [_street(scenario, j) for j in range(1, scenario.street_stores + 1)]
    return sites


def _mall(scenario: Scenario, m: int) -> Site:
    n = scenario.stores_per_mall
    south = (n + 1) // 2
    length = south * SHOP_WIDTH_M
    rects, doors = [], []
    for i in range(n):
        column, north = (i // 2, i % 2 == 1)
        x0 = column * SHOP_WIDTH_M
        y0 = SHOP_DEPTH_M + CORRIDOR_M if north else 0.0
        rects.append((x0, y0, x0 + SHOP_WIDTH_M, y0 + SHOP_DEPTH_M))
        doors.append((x0 + SHOP_WIDTH_M / 2, y0 if north else SHOP_DEPTH_M))
    rect_arr = np.array(rects)
    store_ids = tuple(f"S{m:02d}{i + 1:02d}" for i in range(n))
    sensor_xy = [((r[0] + r[2]) / 2, (r[1] + r[3]) / 2) for r in rects]
    corridor_y = SHOP_DEPTH_M + CORRIDOR_M / 2
    n_corridor = max(1, round(length / CORRIDOR_SENSOR_SPACING_M))
    sensor_xy += [((c + 0.5) * length / n_corridor, corridor_y) for c in range(n_corridor)]
    sensor_ids = tuple(f"AP-{m:02d}{i + 1:02d}" for i in range(n)) + tuple(
        f"AP-{m:02d}C{c + 1}" for c in range(n_corridor)
    )
    walls = np.zeros((n + 1, n + n_corridor), dtype=np.int64)
    col = np.arange(n) // 2
    row = np.arange(n) % 2
    for s in range(n):  # store sensors
        walls[0, s] = 1
        across = row != row[s]
        walls[1:, s] = np.minimum(np.abs(col - col[s]) + 2 * across, MAX_WALLS)
        walls[1 + s, s] = 0
    walls[1:, n:] = 1  # a corridor sensor hears shops through their fronts
    open_min, close_min = parse_hours(scenario.mall_hours)
    return Site(
        site_id=f"MALL-{m:02d}",
        mall_id=f"MALL-{m:02d}",
        street=False,
        lat0=31.20 + 0.021 * m,
        lon0=121.44 + 0.017 * m,
        open_min=open_min,
        close_min=close_min,
        store_ids=store_ids,
        categories=tuple(MALL_CATEGORY_ORDER[i % len(MALL_CATEGORY_ORDER)] for i in range(n)),
        rects=rect_arr,
        doors=np.array(doors),
        lane_y=corridor_y,
        lane_half_m=CORRIDOR_M / 2 - 1.0,
        x_min=0.0,
        x_max=length,
        sensor_ids=sensor_ids,
        sensor_store=tuple(store_ids) + (None,) * n_corridor,
        sensor_xy=np.array(sensor_xy),
        walls=walls,
    )


def _street(scenario: Scenario, j: int) -> Site:
    store_id = f"SS{j:02d}"
    open_min, close_min = parse_hours(scenario.street_hours)
    rect = np.array([[0.0, 0.0, STREET_SHOP_WIDTH_M, STREET_SHOP_DEPTH_M]])
    return Site(
        site_id=store_id,
        mall_id=None,
        street=True,
        lat0=31.215 - 0.013 * j,
        lon0=121.47 + 0.011 * j,
        open_min=open_min,
        close_min=close_min,
        store_ids=(store_id,),
        categories=(STREET_CATEGORY_ORDER[(j - 1) % len(STREET_CATEGORY_ORDER)],),
        rects=rect,
        doors=np.array([[STREET_SHOP_WIDTH_M / 2, 0.0]]),
        lane_y=-PAVEMENT_M / 2,
        lane_half_m=PAVEMENT_M / 2 - 0.5,
        x_min=-STREET_WALK_M,
        x_max=STREET_WALK_M + STREET_SHOP_WIDTH_M,
        sensor_ids=(f"AP-{store_id}",),
        sensor_store=(store_id,),
        sensor_xy=np.array([[STREET_SHOP_WIDTH_M / 2, STREET_SHOP_DEPTH_M / 2]]),
        walls=np.array([[1], [0]]),
    )


def build_catalog(scenario: Scenario, sites: list[Site]) -> Catalog:
    """The catalog of the scenario's sites: malls, stores, sensors and a few campaigns."""
    malls, stores, sensors, campaigns = [], [], [], []
    for site in sites:
        if site.mall_id is not None:
            lat, lon = site.latlon((site.x_min + site.x_max) / 2, site.lane_y)
            name = f"Harbour Mall {site.site_id[-2:]}"
            malls.append(Mall(mall_id=site.mall_id, name=name, tz=scenario.tz, lat=lat, lon=lon))
        hours = scenario.street_hours if site.street else scenario.mall_hours
        for i, store_id in enumerate(site.store_ids):
            category = site.categories[i]
            brands = CATEGORIES[category].brands
            brand = brands[(i // len(MALL_CATEGORY_ORDER) + int(site.site_id[-2:])) % len(brands)]
            x0, y0, x1, y1 = site.rects[i]
            lat, lon = site.latlon((x0 + x1) / 2, (y0 + y1) / 2)
            stores.append(
                Store(
                    store_id=store_id, merchant_id=merchant_of(category, brand), name=brand,
                    category=category, tz=scenario.tz, lat=lat, lon=lon, mall_id=site.mall_id,
                    hours=hours, currency=CURRENCY,
                )
            )
        for s, sensor_id in enumerate(site.sensor_ids):
            inside = site.sensor_store[s]
            lat, lon = site.latlon(*site.sensor_xy[s])
            zone = f"{inside}-floor" if inside else f"{site.mall_id}-corridor"
            sensors.append(
                Sensor(
                    sensor_id=sensor_id, mall_id=site.mall_id, zone=zone, lat=lat, lon=lon,
                    store_id=inside, visit_rssi=-70, min_dwell_s=120, visit_timeout_s=600,
                )
            )
        campaigns += _campaigns(site)
    catalog = Catalog(malls=malls, stores=stores, sensors=sensors, campaigns=campaigns,
                      merchants=loyalty_merchants(stores, scenario.loyalty))
    catalog.validate()
    return catalog


def _campaigns(site: Site) -> list[Campaign]:
    """One campaign per trigger that suits the site's shops."""
    out = []
    wanted = (("coffee", "enter", "Second cup half price"), ("restaurant", "nearby", "Lunch set"),
              ("fashion", "dwell", "10% off today"), ("convenience", "enter", "Free water"))
    for category, trigger, name in wanted:
        if category in site.categories:
            store_id = site.store_ids[site.categories.index(category)]
            out.append(Campaign(campaign_id=f"CP-{store_id}-{trigger}", name=name,
                                store_id=store_id, mall_id=site.mall_id, trigger=trigger))
    if site.mall_id is not None:
        out.append(Campaign(campaign_id=f"CP-{site.mall_id}-birthday", name="Birthday gift",
                            mall_id=site.mall_id, trigger="birthday"))
    return out
