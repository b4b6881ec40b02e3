"""Shared fixtures: real servers on free loopback ports, one module each."""

pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.redis",
    "tests.fixtures.prometheus",
    "tests.fixtures.http",
]
