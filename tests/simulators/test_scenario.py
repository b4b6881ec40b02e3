"""Scenario files: the bundled ones load, bad ones fail with a ConfigError that says why."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import cast
from zoneinfo import ZoneInfo

import pytest

from simulators.mall import MallSimulator
from simulators.scenario import FlashCrowd, Scenario, SensorDark, bundled
from storepulse.errors import ConfigError


def test_bundled_scenarios_load() -> None:
    assert {"demo", "eval-footfall", "incidents", "bad-input"} <= set(bundled())
    demo = Scenario.load("demo")
    assert (demo.malls, demo.stores_per_mall, demo.days, demo.start_date) == (1, 10, 1, "yesterday")
    assert demo.shoppers_per_mall_per_day == 3000 and demo.bad_record_share == 0
    ev = Scenario.load("eval-footfall")
    assert (ev.malls, ev.street_stores) == (2, 2)
    assert 4500 <= ev.malls * ev.shoppers_per_mall_per_day + ev.street_stores * (
        ev.street_passers_per_store_per_day) <= 5500
    inc = Scenario.load("incidents")
    tags = [i.__struct_config__.tag for i in inc.incidents]
    assert all(isinstance(t, str) for t in tags)  # msgspec types tags as str | int | None
    assert sorted(cast(list[str], tags)) == [
        "flash_crowd", "payment_outage", "sales_drop", "sensor_dark"]
    assert inc.shoppers_per_mall_per_day == demo.shoppers_per_mall_per_day  # extends demo
    assert Scenario.load("bad-input").bad_record_share == 0.05


def test_load_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nmalls: 2\nstart_date: '2025-01-31'\ndays: 2\n")
    s = Scenario.load(path)
    assert (s.name, s.malls) == ("mine", 2)
    assert s.dates() == [date(2025, 1, 31), date(2025, 2, 1)]


def test_yesterday_follows_the_local_calendar() -> None:
    s = Scenario(name="x")
    late_utc = datetime(2025, 6, 1, 17, 0, tzinfo=ZoneInfo("UTC"))  # 01:00 on 2 June in Shanghai
    assert s.dates(late_utc) == [date(2025, 6, 1)]
    assert Scenario(name="x", tz="UTC").dates(late_utc) == [date(2025, 5, 31)]
    # several days end yesterday: nothing is simulated in the future
    assert Scenario(name="x", days=3).dates(late_utc) == [
        date(2025, 5, 30), date(2025, 5, 31), date(2025, 6, 1)]


def test_incident_times_are_local_or_iso() -> None:
    s = Scenario.from_yaml("""
name: t
start_date: "2025-03-14"
days: 2
incidents:
  - {kind: sensor_dark, sensor: AP-0101, start: "23:00", end: "24:00", day: 1}
  - {kind: flash_crowd, mall: MALL-01, start: "2025-03-14T12:00:00+00:00",
     end: "2025-03-14T13:00:00+00:00", multiplier: 2}
""")
    dark, flash = s.incidents
    assert isinstance(dark, SensorDark) and isinstance(flash, FlashCrowd)
    # 23:00-24:00 on 15 March in Shanghai = 15:00-16:00 UTC
    assert dark.window_ms(s) == (1742050800000, 1742054400000)
    assert flash.window_ms(s) == (1741953600000, 1741957200000)


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("name: x\nphone_share: 1.5", "phone_share must be in [0, 1]"),
        ("name: x\nshoppers_per_mall_per_day: 0", "shoppers_per_mall_per_day must be at least 1"),
        ("name: x\nmalls: 0\nstreet_stores: 0", "needs at least one mall or street store"),
        ("name: x\nphone_shares: 0.5", "unknown field"),
        ("name: x\nmalls: many", "Expected `int`"),
        ("phone_share: 0.5", "missing required field `name`"),
        ("name: x\ntz: Mars/Olympus", "unknown IANA time zone"),
        ("name: x\nstart_date: tomorrow", "start_date must be 'yesterday' or an ISO date"),
        ("name: x\nmall_hours: '22:00-10:00'", "mall_hours"),
        ("- just\n- a list", "expected a mapping"),
        ("name: [unclosed", "not valid YAML"),
        ("name: x\nincidents: [{kind: meteor, start: '10:00', end: '11:00'}]", "Invalid value 'meteor'"),
        ("name: x\nincidents: [{kind: sensor_dark, sensor: A, start: '12:00', end: '11:00'}]",
         "must be before end"),
        ("name: x\nincidents: [{kind: sensor_dark, sensor: A, start: 'noon', end: '13:00'}]",
         "neither HH:MM nor an ISO datetime"),
        ("name: x\nincidents: [{kind: sales_drop, store: S, start: '10:00', end: '11:00', factor: 2}]",
         "factor must be in [0, 1]"),
        ("name: x\nincidents: [{kind: payment_outage, payment: bitcoin, start: '10:00', end: '11:00'}]",
         "payment must be one of"),
        ("name: x\nincidents: [{kind: sensor_dark, sensor: A, start: '10:00', end: '11:00', day: 1}]",
         "day must be in [0, 0]"),
        ("extends: nothing-like-this\nname: x", "cannot extend 'nothing-like-this'"),
    ],
)
def test_bad_scenarios_fail_clearly(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        Scenario.from_yaml(text, source="bad.yaml")
    assert "scenario bad.yaml" in str(err.value) and fragment in str(err.value)


def test_missing_files_and_unknown_names_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no bundled scenario 'nope'.*demo"):
        Scenario.load("nope")
    with pytest.raises(ConfigError, match="cannot read scenario file"):
        Scenario.load(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    "incident,fragment",
    [
        ({"kind": "sales_drop", "store": "S9999", "factor": 0.5}, "unknown store 'S9999'"),
        ({"kind": "sensor_dark", "sensor": "AP-9999"}, "unknown sensor 'AP-9999'"),
        ({"kind": "flash_crowd", "mall": "MALL-09", "multiplier": 2}, "unknown mall 'MALL-09'"),
    ],
)
def test_incidents_must_name_things_that_exist(incident: dict, fragment: str) -> None:
    text = "name: x\nincidents:\n  - " + repr({**incident, "start": "10:00", "end": "11:00"})
    scenario = Scenario.from_yaml(text.replace("'", '"'))
    with pytest.raises(ConfigError, match=fragment):
        MallSimulator(scenario, seed=1)
