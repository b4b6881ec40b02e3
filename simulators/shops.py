"""What the simulated shops are: categories, brands, menus and how shoppers behave in them.

Pure data and two small lookups; reads and writes nothing. Prices are in fen (CNY minor
units). ``purchase_p`` is the chance that a visit of normal length ends with a sale,
``dwell_median_min`` the median time inside, ``pull`` how strongly the category draws
shoppers in.

>>> CATEGORIES["coffee"].items[0]
('COF-001', 'Latte', 3200)
>>> round(sum(PAYMENT_MIX.values()), 6)
1.0
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors.catalog import Loyalty, Merchant, Store


@dataclass(frozen=True)
class Category:
    name: str
    brands: tuple[str, ...]
    items: tuple[tuple[str, str, int], ...]  # (sku, label, unit price in fen)
    purchase_p: float
    dwell_median_min: float
    pull: float
    max_qty: int = 2
    meal: bool = False


def _items(prefix: str, *pairs: tuple[str, int]) -> tuple[tuple[str, str, int], ...]:
    return tuple((f"{prefix}-{i:03d}", label, price) for i, (label, price) in enumerate(pairs, 1))


CATEGORIES: dict[str, Category] = {
    c.name: c
    for c in (
        Category(
            "coffee", ("Bean Lane", "Daily Roast", "Cup Theory"),
            _items("COF", ("Latte", 3200), ("Americano", 2600), ("Flat white", 3400),
                   ("Muffin", 1800), ("Sandwich", 3600)),
            purchase_p=0.7, dwell_median_min=14, pull=1.4, max_qty=2,
        ),
        Category(
            "tea", ("Leaf & Pearl", "Jade Cup"),
            _items("TEA", ("Milk tea", 1600), ("Fruit tea", 1900), ("Cheese foam tea", 2200)),
            purchase_p=0.75, dwell_median_min=7, pull=1.3, max_qty=3,
        ),
        Category(
            "bakery", ("Golden Crust", "Morning Oven"),
            _items("BAK", ("Croissant", 900), ("Red bean bun", 700), ("Cheesecake slice", 2200),
                   ("Baguette", 1200)),
            purchase_p=0.6, dwell_median_min=6, pull=0.9, max_qty=3,
        ),
        Category(
            "restaurant", ("Hot Pot House", "Noodle Story", "Dim Sum Garden"),
            _items("RST", ("Set meal", 6800), ("Noodles", 3800), ("Dumplings", 2800),
                   ("Soft drink", 800), ("Dessert", 2400)),
            purchase_p=0.9, dwell_median_min=45, pull=1.2, max_qty=3, meal=True,
        ),
        Category(
            "fashion", ("Thread Line", "North Coat", "Linen Room"),
            _items("FSH", ("T-shirt", 9900), ("Jeans", 29900), ("Jacket", 59900),
                   ("Scarf", 12900)),
            purchase_p=0.25, dwell_median_min=12, pull=1.0, max_qty=2,
        ),
        Category(
            "cosmetics", ("Petal Lab", "Glow Box"),
            _items("COS", ("Lipstick", 19900), ("Face mask x5", 8900), ("Serum", 39900)),
            purchase_p=0.3, dwell_median_min=10, pull=0.9, max_qty=2,
        ),
        Category(
            "electronics", ("Volt Store", "Pixel Corner"),
            _items("ELC", ("Phone case", 9900), ("Charger", 12900), ("Earbuds", 69900)),
            purchase_p=0.12, dwell_median_min=12, pull=0.8, max_qty=1,
        ),
        Category(
            "bookstore", ("Paper Harbour",),
            _items("BOK", ("Novel", 4500), ("Magazine", 2000), ("Notebook", 1500)),
            purchase_p=0.3, dwell_median_min=18, pull=0.6, max_qty=2,
        ),
        Category(
            "sports", ("Stride", "Court Ten"),
            _items("SPT", ("Running shoes", 49900), ("Socks", 3900), ("Water bottle", 5900)),
            purchase_p=0.2, dwell_median_min=12, pull=0.7, max_qty=2,
        ),
        Category(
            "convenience", ("Corner Mart", "Quick Stop"),
            _items("CVS", ("Water", 300), ("Snack", 800), ("Onigiri", 700), ("Juice", 600)),
            purchase_p=0.65, dwell_median_min=5, pull=1.0, max_qty=3,
        ),
    )
}

# Order in which a mall's stores take categories: every mall gets the everyday ones first.
MALL_CATEGORY_ORDER = (
    "coffee", "restaurant", "fashion", "tea", "cosmetics", "bakery", "electronics",
    "bookstore", "sports", "convenience",
)
STREET_CATEGORY_ORDER = ("coffee", "convenience", "bakery", "tea", "restaurant")

# Share of sales by payment method in a Chinese mall (mobile wallets dominate).
PAYMENT_MIX: dict[str, float] = {
    "wechat": 0.42, "alipay": 0.37, "unionpay": 0.07, "cash": 0.04, "card": 0.04,
    "bestpay": 0.03, "andpay": 0.03,
}


def merchant_of(category: str, brand: str) -> str:
    """The merchant id of a brand: the same brand in two malls is one merchant.

    >>> merchant_of("coffee", "Daily Roast")
    'M0102'
    """
    cat_index = list(CATEGORIES).index(category) + 1
    brand_index = CATEGORIES[category].brands.index(brand) + 1
    return f"M{cat_index:02d}{brand_index:02d}"


def loyalty_merchants(stores: list[Store], programmes: dict[str, Loyalty]) -> list[Merchant]:
    """The catalog's ``merchants`` for a scenario's ``loyalty``: none without programmes
    (so the catalog stays as it was), else every merchant of ``stores`` and every one a
    programme names (a smaller variant of a scenario may have no store of it), by id,
    with its programme or None.

    >>> s = [Store(store_id=f"S{i}", merchant_id=m, name="x", category="tea", tz="UTC", lat=0, lon=0)
    ...      for i, m in enumerate(["M2", "M1", "M2"])]
    >>> [(m.merchant_id, m.loyalty is not None) for m in loyalty_merchants(s, {"M2": Loyalty(), "M3": Loyalty()})]
    [('M1', False), ('M2', True), ('M3', True)]
    >>> loyalty_merchants(s, {})
    []
    """
    if not programmes:
        return []
    ids = sorted({s.merchant_id for s in stores} | set(programmes))
    return [Merchant(merchant_id=m, loyalty=programmes.get(m)) for m in ids]
