"""What a sales-drop alert names as the cause (flows/drop_context.py), bucket by bucket."""

from __future__ import annotations

import pickle

import pytest

from flows.drop_context import DropContext

B = 300_000
NORMAL = {"wechat": 6, "alipay": 3, "cash": 1}  # 10 sales a bucket, 60% / 30% / 10%


def context_after(window: list[tuple[dict[str, int], int]], *, expected: float = 10.0) -> DropContext:
    """200 normal buckets (footfall 40 of 40 expected), then the suspect ones given as
    (sales by method, footfall)."""
    ctx = DropContext()
    for n in range(200):
        ctx.observe(n * B, NORMAL, expected, 40, 40.0, suspect=False)
    for n, (sales, footfall) in enumerate(window, start=200):
        ctx.observe(n * B, sales, expected, footfall, 40.0, suspect=True)
    return ctx


@pytest.mark.parametrize(
    ("window", "cause"),
    [
        # wechat gone, alipay and cash as usual (some shoppers switch): a payment outage
        ([({"alipay": 4, "cash": 1}, 40)] * 6, "payment:wechat"),
        # nothing sold at all, people still come in: the store, not a channel
        ([({}, 40)] * 6, "conversion"),
        # every method down by 60%, footfall too: fewer people came
        ([({"wechat": 2, "alipay": 1, "cash": 1}, 16)] * 6, "traffic"),
        # every method down by 60%, footfall normal: people came and did not buy
        ([({"wechat": 2, "alipay": 1, "cash": 1}, 40)] * 6, "conversion"),
        # cash (10%) gone: too small a share to blame
        ([({"wechat": 6, "alipay": 3}, 40)] * 6, "conversion"),
    ],
)
def test_the_cause_an_alert_names(window: list[tuple[dict[str, int], int]], cause: str) -> None:
    assert context_after(window).describe().cause == cause


def test_the_numbers_an_alert_reports() -> None:
    ctx = context_after([({"alipay": 4, "cash": 1}, 40)] * 6)
    c = ctx.describe()
    # 6 buckets of 10 expected: 60 expected, 30 sold; wechat's usual 60% share, 36 expected, none sold
    assert (c.expected, c.actual, c.drop_pct, c.silent_methods) == (60.0, 30, 50.0, ("wechat",))
    assert (c.footfall, c.footfall_expected, c.footfall_ratio) == (240, 240.0, 1.0)
    assert c.last_sale_ts == 205 * B


def test_closed_buckets_count_for_nothing_and_a_normal_bucket_ends_the_window() -> None:
    ctx = context_after([({"alipay": 4, "cash": 1}, 40)] * 3)
    ctx.observe(203 * B, {}, None, None, None, suspect=True)  # closed: no expectation
    assert ctx.describe().expected == 30.0
    ctx.observe(204 * B, NORMAL, 10.0, 40, 40.0, suspect=False)
    assert ctx.describe().expected == 0.0
    assert pickle.loads(pickle.dumps(ctx)) == ctx
