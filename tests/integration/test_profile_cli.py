"""`storepulse profile show` as an operator runs it, against a real redis-server."""

from __future__ import annotations

import json

from connectors.schemas import MemberVisits
from state.member_visits import MemberVisitsStore
from state.profiles import ProfileStore
from tests.fixtures.servers import free_port
from tests.integration.test_cli import storepulse
from tests.state.test_profiles import ALICE, BOB

ALICE_VISITS = MemberVisits(
    member_id="M-1001", as_of_ts=ALICE.as_of_ts - 1_000_000, stores_visited=("S1", "S3"),
    last_seen_ts=ALICE.as_of_ts - 1_000_000, last_seen_store="S3",
)  # fmt: skip


def test_show_prints_aligned_field_value_lines(redis_server, redis_client):
    ProfileStore(redis_client).write([ALICE, BOB])
    MemberVisitsStore(redis_client).write([ALICE_VISITS])
    env = {"STOREPULSE_REDIS_URL": redis_server.url}
    shown = storepulse("profile", "show", "M-1001", env=env)
    assert shown.returncode == 0, shown.stderr
    # the longest field name, favourite_categories_decayed, is 28 characters: values at 31
    assert shown.stdout == (
        "member_id                     M-1001\n"
        "as_of_ts                      1763870400000\n"
        "sales                         3\n"
        "refunds                       1\n"
        "zero_sales                    1\n"
        "duplicates                    2\n"
        "gross_spend                   45000\n"
        "refunded                      5000\n"
        "net_spend                     40000\n"
        "avg_ticket                    15000\n"
        "first_purchase_ts             1760414400000\n"
        "last_purchase_ts              1763697600000\n"
        "stores                        S1, S8\n"
        "spend_30d                     25000\n"
        "spend_90d                     40000\n"
        "purchases_30d                 2\n"
        "purchases_90d                 3\n"
        "recency_days                  2\n"
        "rfm                           533\n"
        "favourite_categories          coffee, books, rare, 茶\n"
        "favourite_categories_decayed  coffee, 茶\n"
        "preferred_payment             wechat\n"
        "member_since_ts               1729310400000\n"
        "push_consent                  True\n"
        "birthday                      03-14\n"
        "tags                          vip, tea, green\n"
        "devices                       2\n"
        "birthday_month                True\n"
        "loyalty                       X1: gold, 120 points (earned 450, redeemed 300, taken back 50, "
        "returned 20, expired 0; qualifying spend 40000)\n"
        "segment                       regular\n"
        "stores_visited                S1, S3\n"
        "last_seen_ts                  1763869400000\n"
        "last_seen_store               S3\n"
    )
    no_sales = storepulse("profile", "show", "M-2002", env=env)
    lines = dict(line.split(None, 1) for line in no_sales.stdout.splitlines())
    assert lines["avg_ticket"] == "-" and lines["rfm"] == "-" and lines["stores"] == "(none)"
    assert lines["birthday"] == "-" and lines["tags"] == "(none)" and lines["push_consent"] == "False"
    assert lines["loyalty"] == "(none)" and "stores_visited" not in lines  # no visit seen


def test_show_json_is_the_profile(redis_server, redis_client):
    ProfileStore(redis_client).write([ALICE, BOB])
    MemberVisitsStore(redis_client).write([ALICE_VISITS])
    env = {"STOREPULSE_REDIS_URL": redis_server.url}
    alice = storepulse("profile", "show", "M-1001", "--json", env=env)
    assert alice.returncode == 0, alice.stderr
    assert json.loads(alice.stdout) == {
        "member_id": "M-1001", "as_of_ts": 1763870400000, "sales": 3, "refunds": 1, "zero_sales": 1,
        "duplicates": 2, "gross_spend": 45000, "refunded": 5000, "net_spend": 40000, "avg_ticket": 15000,
        "first_purchase_ts": 1760414400000, "last_purchase_ts": 1763697600000, "stores": ["S1", "S8"],
        "spend_30d": 25000, "spend_90d": 40000, "purchases_30d": 2, "purchases_90d": 3, "recency_days": 2,
        "rfm": "533", "favourite_categories": ["coffee", "books, rare", "茶"],
        "favourite_categories_decayed": ["coffee", "茶"], "preferred_payment": "wechat",
        "member_since_ts": 1729310400000, "push_consent": True, "birthday": "03-14",
        "tags": ["vip", "tea, green"], "devices": 2, "birthday_month": True,
        "loyalty": [{"merchant_id": "X1", "level": "gold", "points": 120, "earned": 450, "redeemed": 300,
                     "taken_back": 50, "returned": 20, "expired": 0, "qualifying_spend": 40000}],
        "segment": "regular",
        "visits": {"member_id": "M-1001", "as_of_ts": 1763869400000, "stores_visited": ["S1", "S3"],
                   "last_seen_ts": 1763869400000, "last_seen_store": "S3"},
    }  # fmt: skip
    bob = json.loads(storepulse("profile", "show", "M-2002", "--json", env=env).stdout)
    assert bob["avg_ticket"] is None and bob["rfm"] is None and bob["stores"] == []
    assert bob["visits"] is None and bob["loyalty"] == []


def test_a_member_without_a_profile_is_a_clear_message_and_exit_1(redis_server, redis_client):
    missing = storepulse("profile", "show", "M-9999", "--json", env={"STOREPULSE_REDIS_URL": redis_server.url})
    assert missing.returncode == 1 and missing.stdout == ""
    assert "no profile for member 'M-9999'" in missing.stderr and "Traceback" not in missing.stderr


def test_show_needs_a_redis_that_answers():
    unset = storepulse("profile", "show", "M-1001", env={"STOREPULSE_REDIS_URL": ""})
    assert unset.returncode == 2 and "STOREPULSE_REDIS_URL is not set: `profile show`" in unset.stderr
    down = storepulse("profile", "show", "M-1001", env={"STOREPULSE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert down.returncode == 2 and "did not answer PING" in down.stderr and "Traceback" not in down.stderr


def test_help_lists_the_command():
    top = storepulse("--help", env={})
    assert top.returncode == 0 and "profile " in top.stdout and "member profiles in Redis" in top.stdout
