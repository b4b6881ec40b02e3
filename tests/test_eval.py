"""The footfall acceptance check, through the command line as the issue states it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def evaluate(what: str) -> dict:
    """``storepulse eval WHAT --seed 7 --json`` as a user runs it; its last line, parsed."""
    done = subprocess.run(
        [sys.executable, "-m", "storepulse.cli", "eval", what, "--seed", "7", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # the last line is the JSON object


@pytest.mark.slow
def test_eval_footfall_seed_7_meets_the_limits() -> None:
    result = evaluate("footfall")
    # The truth is the simulator's (people with phones staying >= 120 s), independent of the engine.
    assert result["visitors_truth_all"] > 5000 and result["store_hours_stable"] > 200
    assert result["visitors_mape_stable"] <= 0.05
    assert result["visitors_mape_all"] <= 0.10
    assert result["dwell_median_error_s"] <= 60
    assert result["dead_letters"] == 0 and result["pass"] is True


@pytest.mark.slow
def test_eval_profiles_seed_7_matches_the_truth_for_every_member() -> None:
    result = evaluate("profiles")
    assert result["scenario"] == "members-month"
    assert result["members"] > 300 and result["profiles_engine"] == result["members"]
    assert result["mismatches"] == 0 and result["pass"] is True
