"""``storepulse bench profile-latency`` against ``storepulse run`` (real Kafka, real Redis):
every sale it sends is seen in its member's profile, the report is one well-formed JSON
line, and the Redis setting it changes is put back. Latency is measured, not asserted
(docs/benchmarks.md has the numbers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import msgspec
import pytest

from simulators.mall import MallSimulator
from simulators.scenario import Scenario
from state.profiles import ProfileStore
from storepulse.bench import DEMO_MEMBER_SALE_RATE
from tests.integration.engine_process import EngineProcess

pytestmark = pytest.mark.slow
SALES = 60
WARMUP = 5
FIELDS = ("sent", "observed", "missing", "p50_s", "p99_s", "max_s", "rate", "target_rate", "seconds")


def test_every_sale_is_observed_in_its_members_profile(engine_env, redis_client, tmp_path) -> None:
    topics, env = engine_env(1)
    redis_client.config_set("notify-keyspace-events", "Ex")  # another user's flags: kept, then restored
    engine = EngineProcess(env, tmp_path / "engine.log").start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "storepulse.cli", "bench", "profile-latency",
             "--sales", str(SALES), "--rate", "40", "--warmup", str(WARMUP), "--timeout", "60"],
            env={**os.environ, **env}, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr[-3000:] + engine.log()[-3000:]
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert set(report) == set(FIELDS)
        assert (report["sent"], report["observed"], report["missing"]) == (SALES, SALES, 0)
        assert report["max_s"] >= report["p99_s"] >= report["p50_s"] > 0
        assert report["rate"] > 0 and report["target_rate"] == 40 and report["seconds"] > 0
        # every sale was valid for the catalog: read and used, none dead-lettered
        assert engine.metric("storepulse_input_rejected_total") == 0
        assert engine.metric("storepulse_input_records_total", topic=topics["transactions"]) == SALES + WARMUP
    finally:
        engine.stop()
    assert redis_client.config_get("notify-keyspace-events")["notify-keyspace-events"] in ("Ex", "xE")
    members = [k.decode() for k in redis_client.scan_iter("sp:member:{bench-*}:profile", count=1000)]
    assert len(members) == SALES + WARMUP
    profile = ProfileStore(redis_client).read(members[0][len("sp:member:{") : -len("}:profile")])
    assert profile is not None and profile.sales == 1


def test_the_default_rate_is_the_demos_member_sale_rate() -> None:
    """706 member sales in 11.7 trading hours, at the demo's speedup of 4000 (storepulse demo)."""
    txns = [msgspec.json.decode(v) for v in MallSimulator(Scenario.load("demo"), 7).truth.transactions]
    member_sales = sorted(t["ts"] for t in txns if t["type"] == "sale" and t["member_id"])
    trading_s = (member_sales[-1] - member_sales[0]) / 1000
    assert len(member_sales) / (trading_s / 4000) == pytest.approx(DEMO_MEMBER_SALE_RATE, rel=0.02)
