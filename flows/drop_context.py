"""What a sales-drop alert says besides its score: expected against actual sales, footfall
against its normal (a traffic problem or a conversion problem), the last sale, and which
payment method went silent. Pure and picklable, one per store, fed bucket by bucket.

``observe`` takes each bucket's sales per payment method, the expected sales of the
bucket (the drop detector's expectation), footfall and its expectation, and whether the
store is *suspect* (its drop score above a low bar). Normal buckets teach each method's
usual share (an exponentially weighted share of the sales, a week's half-life); suspect
buckets add up into the window an alert describes. ``describe`` names the cause:

- ``payment:<method>``: a method that normally takes at least ``MIN_SHARE`` of the sales,
  with at least ``MIN_EXPECTED`` sales expected of it in the window, took at most
  ``SILENT`` of them (shoppers who would have paid that way bought nothing), while the
  other methods kept at least ``OTHERS_KEPT`` of theirs (when every way of paying went
  quiet, the store, not a channel, has the problem);
- ``traffic``: otherwise, footfall at most ``TRAFFIC`` of its normal (fewer people came);
- ``conversion``: otherwise (people came in and did not buy).

>>> ctx = DropContext()
>>> for _ in range(200):  # normal: half of the sales by wechat
...     ctx.observe(0, {"wechat": 5, "alipay": 5}, 10.0, 40, 40.0, suspect=False)
>>> for n in range(6):    # wechat goes silent; footfall normal
...     ctx.observe(300_000 * n, {"alipay": 5}, 10.0, 40, 40.0, suspect=True)
>>> c = ctx.describe()
>>> c.cause, c.actual, round(c.expected), c.drop_pct, c.footfall_ratio
('payment:wechat', 30, 60, 50.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

HALF_LIFE_BUCKETS = 2016  # a week of 5-minute buckets
_KEEP = 0.5 ** (1 / HALF_LIFE_BUCKETS)  # what a normal bucket keeps of the usual sales
MIN_SHARE = 0.15
MIN_EXPECTED = 5.0
SILENT = 0.1
OTHERS_KEPT = 0.5
TRAFFIC = 0.7


@dataclass(frozen=True)
class Context:
    """An alert's context over the suspect window."""

    expected: float  # sales expected in the window
    actual: int  # sales made in it
    drop_pct: float  # 100 * (1 - actual / expected)
    footfall: int | None
    footfall_expected: float | None
    footfall_ratio: float | None
    last_sale_ts: int | None  # start of the last bucket with a sale
    silent_methods: tuple[str, ...]
    cause: str


@dataclass
class DropContext:
    """One store's context accumulators; see the module docstring."""

    usual: dict[str, float] = field(default_factory=dict)  # decayed sales per method, normal buckets
    window_expected: float = 0.0
    window_actual: int = 0
    window_footfall: int = 0
    window_footfall_expected: float = 0.0
    window_by_method: dict[str, int] = field(default_factory=dict)
    footfall_known: bool = True
    last_sale_ts: int | None = None

    def observe(
        self,
        ts_ms: int,
        sales_by_method: Mapping[str, int],
        expected: float | None,
        footfall: int | None,
        footfall_expected: float | None,
        *,
        suspect: bool,
    ) -> None:
        sales = sum(sales_by_method.values())
        if sales > 0:
            self.last_sale_ts = ts_ms
        if not suspect:
            for method in self.usual:
                self.usual[method] *= _KEEP
            for method, n in sales_by_method.items():
                self.usual[method] = self.usual.get(method, 0.0) + n
            self._reset_window()
            return
        if expected is None:  # closed: nothing was expected
            return
        self.window_expected += expected
        self.window_actual += sales
        for method, n in sales_by_method.items():
            self.window_by_method[method] = self.window_by_method.get(method, 0) + n
        if footfall is None or footfall_expected is None:
            self.footfall_known = False
        else:
            self.window_footfall += footfall
            self.window_footfall_expected += footfall_expected

    def describe(self) -> Context:
        expected = self.window_expected
        total = sum(self.usual.values())
        shares = {method: n / total for method, n in self.usual.items()} if total > 0 else {}
        silent = tuple(
            sorted(
                method
                for method, share in shares.items()
                if share >= MIN_SHARE
                and expected * share >= MIN_EXPECTED
                and self.window_by_method.get(method, 0) <= SILENT * expected * share
            )
        )
        if silent:
            others_expected = expected * (1 - sum(shares[m] for m in silent))
            others_actual = self.window_actual - sum(self.window_by_method.get(m, 0) for m in silent)
            if others_expected < MIN_EXPECTED or others_actual < OTHERS_KEPT * others_expected:
                silent = ()
        ratio = None
        if self.footfall_known and self.window_footfall_expected > 0:
            ratio = round(self.window_footfall / self.window_footfall_expected, 3)
        if silent:
            cause = "payment:" + ",".join(silent)
        elif ratio is not None and ratio <= TRAFFIC:
            cause = "traffic"
        else:
            cause = "conversion"
        return Context(
            expected=expected,
            actual=self.window_actual,
            drop_pct=round(100 * (1 - self.window_actual / expected), 1) if expected > 0 else 0.0,
            footfall=self.window_footfall if self.footfall_known else None,
            footfall_expected=round(self.window_footfall_expected, 1) if self.footfall_known else None,
            footfall_ratio=ratio,
            last_sale_ts=self.last_sale_ts,
            silent_methods=silent,
            cause=cause,
        )

    def _reset_window(self) -> None:
        self.window_expected = 0.0
        self.window_actual = 0
        self.window_footfall = 0
        self.window_footfall_expected = 0.0
        self.window_by_method = {}
        self.footfall_known = True
