"""Billing: prices, budgets (reserve -> commit / release), the usage ledger."""

from runloom.billing.accounts import Accounts, period_start
from runloom.billing.ledger import LedgerConsumer, Reconciliation, ledger_total, reconcile, record
from runloom.billing_client import PriceTable, PriceTableError, default_prices, load_prices

__all__ = [
    "Accounts",
    "LedgerConsumer",
    "PriceTable",
    "PriceTableError",
    "Reconciliation",
    "default_prices",
    "ledger_total",
    "load_prices",
    "period_start",
    "reconcile",
    "record",
]
