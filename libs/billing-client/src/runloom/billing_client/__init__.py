"""Billing's client library: what a service that spends needs, owned by billing.

A caller reserves before every provider or tool call and commits or releases after, over
request/reply (`Meter`); `BudgetExceeded` stops it before the spend. The price table (the
estimate a caller reserves, the cost billing commits) is billing's, shipped here so both sides
price a call the same way. `BillingQueries` asks billing for the budget and usage views (the
gateway's `/v1/budget` and `/v1/usage`); `BillingUnavailable` says billing did not answer.
"""

from runloom.billing_client._meter import (
    BudgetExceeded,
    Meter,
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
from runloom.billing_client._queries import BillingQueries
from runloom.billing_client._request import BillingUnavailable, MeteringError

__all__ = [
    "QUANTUM",
    "BillingQueries",
    "BillingUnavailable",
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
