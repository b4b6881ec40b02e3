"""The catalog model: each store states its currency, and nonsense is refused by name."""

from __future__ import annotations

import msgspec
import pytest

from connectors.catalog import Catalog
from storepulse.errors import CatalogError

STORES = """
malls: [{mall_id: M1, name: Joy, tz: Asia/Shanghai, lat: 0, lon: 0}]
stores:
  - {store_id: S1, merchant_id: X, mall_id: M1, name: A, category: coffee, tz: Asia/Shanghai, lat: 0, lon: 0}
  - {store_id: S8, merchant_id: Y, name: B, category: tea, tz: Asia/Hong_Kong, lat: 0, lon: 0, currency: HKD}
"""


def test_a_store_without_a_currency_takes_cny_and_a_stated_one_is_kept() -> None:
    catalog = Catalog.from_yaml(STORES)
    assert [(s.store_id, s.currency) for s in catalog.stores] == [("S1", "CNY"), ("S8", "HKD")]


def test_the_currency_survives_the_yaml_and_json_round_trips() -> None:
    catalog = Catalog.from_yaml(STORES)
    assert "currency: HKD" in catalog.to_yaml()
    assert Catalog.from_yaml(catalog.to_yaml()) == catalog
    assert Catalog.from_json(catalog.to_json()) == catalog
    # the currency is content: changing it moves the version
    assert Catalog.from_yaml(STORES.replace("HKD", "MOP")).version != catalog.version


@pytest.mark.parametrize("bad", ['"cny"', "CN", "CNYY", '""', "C1Y", '"RMB "', "156"])
def test_a_currency_that_is_not_a_three_letter_code_is_refused_naming_the_store(bad: str) -> None:
    with pytest.raises(CatalogError, match=r"S8|stores\[1\]\.currency"):
        Catalog.from_yaml(STORES.replace("currency: HKD", f"currency: {bad}"))


def test_validate_refuses_a_bad_currency_in_a_catalog_built_in_code() -> None:
    catalog = Catalog.from_yaml(STORES)
    stores = [msgspec.structs.replace(s, currency="yuan") if s.store_id == "S8" else s for s in catalog.stores]
    with pytest.raises(CatalogError, match="store S8: currency 'yuan' is not a 3-letter uppercase ISO 4217 code"):
        Catalog(malls=catalog.malls, stores=stores).validate()


HOLIDAYS = """
holidays:
  - {date: "2026-10-01", name: National Day, factor: 1.6}
  - {date: "2026-10-02", name: Golden Week, stores: [S8]}
"""


def test_holidays_apply_to_every_store_or_to_the_stores_they_name() -> None:
    catalog = Catalog.from_yaml(STORES + HOLIDAYS)
    assert catalog.holidays_of("S1") == {"2026-10-01": 1.6}
    assert catalog.holidays_of("S8") == {"2026-10-01": 1.6, "2026-10-02": None}
    assert Catalog.from_yaml(catalog.to_yaml()) == catalog


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (("2026-10-01", "2026/10/01"), "not a YYYY-MM-DD date"),
        (("factor: 1.6", "factor: -1"), "factor -1.0 is negative"),
        (("stores: [S8]", "stores: [S404]"), "unknown stores S404"),
    ],
)
def test_a_broken_holiday_is_refused_with_its_reason(change: tuple[str, str], reason: str) -> None:
    with pytest.raises(CatalogError, match=reason):
        Catalog.from_yaml(STORES + HOLIDAYS.replace(*change))


@pytest.mark.parametrize("bad", ["10-22", "10:00", "25:00-22:00", "10:00-22:60", "9:00-17:00", ""])
def test_opening_hours_that_are_not_hh_mm_hh_mm_are_refused_naming_the_store(bad: str) -> None:
    # the sales watch reads them on every closed minute: refused at load, not in the engine
    catalog = Catalog.from_yaml(STORES)
    stores = [msgspec.structs.replace(s, hours=bad) if s.store_id == "S8" else s for s in catalog.stores]
    with pytest.raises(CatalogError, match=f"store S8: hours {bad!r} are not HH:MM-HH:MM"):
        Catalog(malls=catalog.malls, stores=stores).validate()
    for good in ("10:00-22:00", "22:00-02:00", "00:00-00:00"):
        stores = [msgspec.structs.replace(s, hours=good) for s in catalog.stores]
        Catalog(malls=catalog.malls, stores=stores).validate()
