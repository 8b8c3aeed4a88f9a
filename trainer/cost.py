"""What a run costs: the hardware's hourly price times the run's time, and the cap that ends a run at a price.

The price is the owner's to state, never guessed from the GPU (a T4-small and a T4-medium Space share one GPU):
`PRICETUNE_HOURLY_USD` (any machine), else `PRICETUNE_HARDWARE` naming a Hugging Face Spaces flavour of SPACE_PRICES.
"""

from __future__ import annotations

import os

PRICE_ENV, HARDWARE_ENV = "PRICETUNE_HOURLY_USD", "PRICETUNE_HARDWARE"
PRICES_AS_OF = "Hugging Face's Spaces GPU page (docs/hub/spaces-gpus) as read on 2026-12-01"
SPACE_PRICES: dict[str, float] = {"cpu-basic": 0.0, "cpu-upgrade": 0.03, "t4-small": 0.40, "t4-medium": 0.60,
                                  "l4x1": 0.80, "l4x4": 3.80, "l40sx1": 1.80, "l40sx4": 8.30}
"""USD an hour by Spaces hardware flavour (huggingface_hub's SpaceHardware names), from PRICES_AS_OF; the flavours
whose price was not on that page are priced with PRICETUNE_HOURLY_USD."""


class PriceError(ValueError):
    """A price setting that cannot be used, named."""


def hourly_price() -> tuple[float, str] | None:
    """(USD an hour, where it came from) from the environment, or None when no price is stated."""
    stated = os.environ.get(PRICE_ENV, "").strip()
    if stated:
        try:
            price = float(stated)
        except ValueError:
            raise PriceError(f"{PRICE_ENV} must be a number of dollars an hour (got {stated!r})") from None
        if not 0 <= price < 1000:
            raise PriceError(f"{PRICE_ENV} must be between 0 and 1000 dollars an hour (got {price:g})")
        return price, PRICE_ENV
    flavour = os.environ.get(HARDWARE_ENV, "").strip()
    if not flavour:
        return None
    if flavour not in SPACE_PRICES:
        raise PriceError(f"{HARDWARE_ENV}={flavour!r} has no price here ({', '.join(SPACE_PRICES)}); "
                         f"set {PRICE_ENV} instead")
    return SPACE_PRICES[flavour], f"{flavour} at {PRICES_AS_OF}"


def cost(seconds: float, price_per_hour: float) -> float:
    return max(seconds, 0.0) / 3600 * price_per_hour
