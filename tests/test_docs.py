"""The README and --help say what the code does: variables, defaults and commands."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from storepulse.cli import parser
from storepulse.settings import VARIABLES, Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_the_readme_variable_table_is_the_settings() -> None:
    rows = re.findall(r"^\| `(STOREPULSE_[A-Z0-9_]+)` \| (.*?) \| (.*?) \|$", README, re.M)
    defaults = Settings()
    expected = []
    for var in VARIABLES:
        value = getattr(defaults, var.field)
        shown = "(unset)" if value in (None, {}) or var.secret else str(value)
        expected.append((var.name, shown, var.help))
    assert rows == expected


def test_help_lists_every_variable_and_the_readme_every_command() -> None:
    text = parser().format_help()
    assert all(var.name in text for var in VARIABLES)
    [sub] = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    commands = sub.choices
    assert set(commands) == {"demo", "run", "simulate", "catalog", "eval", "profile", "bench", "dashboards"}
    for command in commands:
        assert f"`{command}" in README or f"storepulse {command}" in README, command
    assert "`profile show MEMBER_ID" in README  # "`profile`" alone is also a member event type
