"""Shared simulator runs for the simulator tests: fixtures, since test modules cannot
import each other under importlib mode."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from connectors.schemas import MemberEvent, ProbeReport, Transaction
from simulators.mall import MallSimulator, SimEvent
from simulators.scenario import Scenario

TYPES = {"wifi.probes": ProbeReport, "pos.transactions": Transaction,
         "members.events": MemberEvent}


@dataclass
class Run:
    sim: MallSimulator
    events: list[SimEvent]
    decoded: list[Any]  # per event: decoded with the contract type of its topic

    def observations(self) -> Iterator[tuple[str, Any, int]]:
        """(sensor_id, sighting, message index) for every sighting, single or batched."""
        for i, (e, d) in enumerate(zip(self.events, self.decoded, strict=True)):
            if e.topic != "wifi.probes":
                continue
            if d.observations is not None:
                for o in d.observations:
                    yield d.sensor_id, o, i
            else:
                yield d.sensor_id, d, i

    def of_topic(self, topic: str) -> list[Any]:
        return [d for e, d in zip(self.events, self.decoded, strict=True) if e.topic == topic]


def _run(scenario: Scenario, seed: int) -> Run:
    sim = MallSimulator(scenario, seed)
    events = list(sim.events())
    decoded = [msgspec.json.decode(e.value, type=TYPES[e.topic]) for e in events]
    return Run(sim, events, decoded)


def _base() -> Scenario:
    """A Saturday at one mall of eight shops and one street shop; phones probe every 30 s
    on average (the denser default); 500 mall shoppers, 200 passers-by on the street."""
    return Scenario.load("demo").replace(
        name="test-base", start_date="2025-03-15", stores_per_mall=8, street_stores=1,
        shoppers_per_mall_per_day=500, street_passers_per_store_per_day=200,
        street_capture_share=0.2, probe_interval_s=30.0, batched_sensor_share=0.5)


@pytest.fixture
def base_scenario() -> Scenario:
    return _base()


@pytest.fixture(scope="session")
def make_run() -> Callable[[Scenario, int], Run]:
    return _run


@pytest.fixture(scope="session")
def base_run() -> Run:
    return _run(_base(), seed=11)
