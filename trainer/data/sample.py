"""The built-in sample: seeded synthetic products whose prices really follow from their text."""

from __future__ import annotations

import math
import random

from .core import Product

_CATEGORIES = {  # category: (base price, items, usage sentence)
    "kitchen": (28.0, ["chef knife", "frying pan", "mixing bowl set", "cutting board", "saucepan", "kettle"],
                "Made for everyday cooking and easy cleanup in a busy home kitchen."),
    "tools": (45.0, ["socket wrench set", "cordless drill", "hand saw", "tool box", "utility knife"],
              "Built for workshop projects, home repairs and weekend jobs around the house."),
    "appliance parts": (22.0, ["refrigerator water filter", "dryer belt", "dishwasher rack wheel",
                               "washer drain pump", "oven heating element"],
                        "A direct replacement part that installs in minutes without special tools."),
    "electronics accessories": (18.0, ["USB-C charging cable", "phone stand", "wireless charger",
                                       "laptop sleeve", "HDMI adapter"],
                                "Works with most phones, tablets and laptops from major brands."),
    "home": (35.0, ["table lamp", "throw blanket", "storage basket", "wall clock", "shower caddy"],
             "Adds comfort and order to a bedroom, living room or bathroom."),
    "outdoor": (60.0, ["camping lantern", "garden hose", "folding chair", "cooler", "grill cover"],
                "Ready for the backyard, the campsite or a long day at the beach."),
    "appliances": (140.0, ["countertop blender", "stand mixer", "air fryer", "espresso machine",
                           "microwave oven"],
                   "A dependable countertop appliance with simple controls for daily use."),
    "furniture": (120.0, ["office chair", "bookshelf", "side table", "bar stool", "shoe rack"],
                  "Assembles quickly and fits neatly into small apartments and offices."),
}
BRANDS = {  # tier: (price multiplier, brand names)
    "budget": (0.6, ["ValueMax", "EcoBasics", "HandyHome", "QuickFix", "BrightBuy"]),
    "mid": (1.0, ["Northwind", "Crestline", "Harbor & Pine", "Meridian", "Fieldcraft"]),
    "premium": (1.8, ["Aurelian", "Stahlwerk Pro", "Maison Royale", "Summit Elite", "Kensington"]),
}
_SIZES = [("compact", 0.8), ("6-inch", 0.85), ("12-inch", 1.0), ("18-inch", 1.2), ("large", 1.3),
          ("pack of 2", 1.6), ("pack of 4", 2.4), ("set of 6", 3.0)]
_MATERIALS = [("plastic", 0.7), ("bamboo", 0.9), ("aluminum", 1.0), ("stainless steel", 1.3),
              ("cast iron", 1.4), ("solid oak", 1.6), ("carbon fiber", 1.9)]
_FEATURES = [("a lifetime warranty", 1.15), ("a dishwasher-safe finish", 1.05), ("a non-slip base", 1.03),
             ("smart app control", 1.35), ("a rechargeable battery", 1.25), ("a carrying case", 1.08),
             ("commercial-grade construction", 1.3), ("an ergonomic handle", 1.05)]


def _sample_product(rng: random.Random) -> Product:
    category = rng.choice(list(_CATEGORIES))
    base, items, usage = _CATEGORIES[category]
    tier = rng.choice(list(BRANDS))
    multiplier, brands = BRANDS[tier]
    size, size_x = rng.choice(_SIZES)
    material, material_x = rng.choice(_MATERIALS)
    features = rng.sample(_FEATURES, rng.randint(1, 3))
    item = rng.choice(items)
    model = f"{rng.choice('ABCDEFGHKLMNPRSTVX')}{rng.choice('ABCDEFGHKLMNPRSTVX')}-{rng.randint(100, 9999)}"
    price = base * multiplier * size_x * material_x * math.prod(x for _, x in features)
    price *= rng.uniform(0.85, 1.15)
    feature_words = ", ".join(name for name, _ in features[:-1])
    feature_words = f"{feature_words} and {features[-1][0]}" if feature_words else features[0][0]
    sentences = [f"{rng.choice(brands)} {size} {material} {item}, model {model}, from our {category} range.",
                 f"It comes with {feature_words}, and the {material} body is made to last for years.",
                 usage]
    return Product(" ".join(sentences), round(min(max(price, 1.0), 999.0), 2))


def make_sample_products(n: int = 3000, seed: int = 42) -> list[Product]:
    """A deterministic synthetic data set: category, brand tier, size, material and features set the price."""
    rng = random.Random(seed)
    products: list[Product] = []
    seen: set[str] = set()
    while len(products) < n:
        product = _sample_product(rng)
        if product.text not in seen:  # unique texts, so the sample never trips the duplicate check
            seen.add(product.text)
            products.append(product)
    return products
