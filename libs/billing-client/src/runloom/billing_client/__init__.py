"""Billing's client library: what a service that spends needs, owned by billing.

A caller reserves before every provider or tool call and commits or releases after, over
request/reply (`Meter`); `BudgetExceeded` stops it before the spend. The price table (the
estimate a caller reserves, the cost billing commits) is billing's, shipped here so both sides
price a call the same way.
"""

from runloom.billing_client._meter import (
    BudgetExceeded,
    Meter,
    MeteringError,
    MeterOptions,
    Reservation,
)
from runloom.billing_client._prices import (
    QUANTUM,
    ModelPrice,
    PriceTable,
    PriceTableError,
    default_prices,
    load_prices,
    parse_prices,
)

__all__ = [
    "QUANTUM",
    "BudgetExceeded",
    "Meter",
    "MeterOptions",
    "MeteringError",
    "ModelPrice",
    "PriceTable",
    "PriceTableError",
    "Reservation",
    "default_prices",
    "load_prices",
    "parse_prices",
]
