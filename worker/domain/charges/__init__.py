"""Charges of docs/credits.md §3: routing (§3.1), targets (§3.2), persisted charges (§3.3), the diff (§3.4), amounts
and rating (§3.5), and the charge engine — the state machine (§3.6), the effects of a sync's patches (§3.7),
booking (§3.10), invoicing (§3.11), `set-quantity` (§3.12) and immutable invoices (§3.13).

One module per idea, each importing only those before it: `routing` (§3.1), `amounts` (§3.5), `items`
(§3.3), `targets` (§3.2), `diff` (§3.4), `changes` (what the engine decides) and `engine` (§3.6-§3.13).
This package re-exports the names the rest of the code imports.
"""

from worker.domain.charges.amounts import discount_total, flat_charge_amount, rate_usage
from worker.domain.charges.changes import ChargeChanges, ChargePrintedPatch, StatusChange
from worker.domain.charges.diff import ChargeCreate, plan_charges
from worker.domain.charges.engine import ChargeEngine, ChargeError, is_invoiceable
from worker.domain.charges.items import Charge, ChargeItem, ChargeLine, ChargeRun, index_charges
from worker.domain.charges.routing import CreditMode, RoutingError, route
from worker.domain.charges.targets import ChargeTarget, build_charge_targets, route_targets

__all__ = [
    "Charge",
    "ChargeChanges",
    "ChargeCreate",
    "ChargeEngine",
    "ChargeError",
    "ChargeItem",
    "ChargeLine",
    "ChargePrintedPatch",
    "ChargeRun",
    "ChargeTarget",
    "CreditMode",
    "RoutingError",
    "StatusChange",
    "build_charge_targets",
    "discount_total",
    "flat_charge_amount",
    "index_charges",
    "is_invoiceable",
    "plan_charges",
    "rate_usage",
    "route",
    "route_targets",
]
