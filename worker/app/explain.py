"""`subsync explain line|charge` (docs/sync.md §10.1): re-derive a stored line or charge by running the
target builder on what a sync would load (`worker.store.snapshot.load_snapshot`, under the customer lock like a
sync, so the comparison sees a settled state), and compare. One transaction, rolled back: nothing is written."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine

from worker.app.simulate import rolled_back
from worker.config import DEFAULT_MAX_TARGET_LINES
from worker.domain.charges import ChargeTarget, route_targets
from worker.domain.charges.routing import RoutingError, route
from worker.domain.explain import StoredCharge, charge_line, explain_charge, explain_line
from worker.domain.prices import FlatPrice
from worker.domain.sync_state import customer_deleted_before_start
from worker.domain.target import Candidate, TargetLine, generate_candidates
from worker.domain.view import SubscriptionView, build_view
from worker.errors import NotFoundError
from worker.infra.clock import utcnow
from worker.store.charge_queries import list_charge_rows
from worker.store.charges import load_charges
from worker.store.explain import line_issues, load_line
from worker.store.snapshot import load_snapshot


@dataclass(frozen=True, slots=True)
class Explained:
    """The explanation (docs/sync.md §10.1 JSON shape) and the stored row it explains (the CLI prints
    that row in the shape of `subsync lines` / `subsync charges list`)."""

    data: dict[str, Any]
    row: Any


@dataclass(frozen=True, slots=True)
class _Derived:
    view: SubscriptionView | None
    candidate: Candidate | None
    line: TargetLine | None
    charge: ChargeTarget | None
    routed: str | None


def _derive(
    conn: Connection, namespace: str, subscription_id: str, identity: str | None, as_of: datetime, reach: datetime
) -> _Derived:
    """The target of a sync at `as_of`, and one generation up to `reach` (far enough to produce the stored period
    whatever the horizon) for the derivation of `identity`."""
    now = utcnow()
    try:
        snapshot = load_snapshot(conn, namespace, subscription_id, now=now)  # what a sync now would read
    except NotFoundError:
        return _Derived(None, None, None, None, None)
    if snapshot.phases is None:  # deleted: the target is empty (docs/sync.md §8.1)
        return _Derived(None, None, None, None, None)
    view = build_view(snapshot.subscription, list(snapshot.phases))
    deleted_at = snapshot.customer_deleted_at if view.has_billables else None
    if customer_deleted_before_start(deleted_at, snapshot.subscription.active_from):
        return _Derived(None, None, None, None, None)
    persisted, charges = snapshot.persisted, snapshot.charges
    mode = snapshot.settlement_mode
    target, charge_targets = route_targets(
        view, as_of, mode, persisted, charges, customer_deleted_at=deleted_at, max_lines=DEFAULT_MAX_TARGET_LINES
    )
    capped, candidates, *_ = generate_candidates(
        view, max(as_of, reach), persisted, deleted_at, max_lines=DEFAULT_MAX_TARGET_LINES
    )
    candidate = next((c for c in candidates if f"{capped.id}/{c.phase.key}/{c.identity}" == identity), None)
    line = next((t.target() for t in target.lines if t.identity == identity), None)
    charge = next((t.target() for t in charge_targets if t.identity == identity), None)
    routed: str | None = None
    if identity is not None:
        held = charges.get(identity)
        try:
            routed = route(identity, mode, persisted.items.get(identity), held.charge.id if held else None)
        except RoutingError:
            routed = "conflict"
    return _Derived(capped, candidate, line, charge, routed)


def explain_line_of(engine: Engine, namespace: str, line_id: str, *, as_of: datetime | None = None) -> Explained:
    """Explain one line (deleted ones too). NotFoundError (exit 1) for an unknown line."""
    at = as_of or utcnow()

    def work(conn: Connection) -> Explained:
        stored, row = load_line(conn, namespace, line_id)
        if stored.charge_id is not None:  # a charge-managed line: the identity is its charge's (docs/credits.md §3.11)
            charge = load_charges(conn, namespace, [stored.charge_id]).get(stored.charge_id)
            stored = replace(stored, identity=charge.charge.identity if charge is not None else None)
        derived = _Derived(None, None, None, None, None)
        if stored.subscription_id is not None:
            reach = max(stored.invoice_at, stored.service_period.end)
            derived = _derive(conn, namespace, stored.subscription_id, stored.identity, at, reach)
        target = derived.line
        if stored.charge_id is not None:
            target = charge_line(derived.charge) if derived.charge is not None else None
        data = explain_line(derived.view, stored, derived.candidate, target, derived.routed, at)
        data["invoice"]["issues"] = line_issues(conn, namespace, stored.invoice.id, stored.id)
        return Explained(data, row)

    return rolled_back(engine, work)  # read-only: nothing to keep


def explain_charge_of(engine: Engine, namespace: str, charge_id: str, *, as_of: datetime | None = None) -> Explained:
    """Explain one charge (deleted ones too), with its runs and allocation rows. NotFoundError for an unknown one."""
    at = as_of or utcnow()

    def work(conn: Connection) -> Explained:
        items = load_charges(conn, namespace, [charge_id])
        rows = list_charge_rows(conn, namespace, charge_ids=[charge_id], include_deleted=True)
        if charge_id not in items or not rows:
            raise NotFoundError(f"charge {charge_id!r} not found in namespace {namespace!r}")
        item = items[charge_id]
        c = item.charge
        stored = StoredCharge(
            id=c.id,
            identity=c.identity,
            status=c.status,
            settlement_mode=c.settlement_mode,
            deleted=c.deleted_at is not None,
            service_period=c.service_period,
            invoice_at=c.invoice_at,
            amount=c.amount_after_proration if c.is_flat else None,  # usage: rated from a quantity, not the document
            advance_after=c.advance_after,
            is_flat=c.is_flat,
            in_advance=isinstance(c.price, FlatPrice) and c.price.in_advance,
            has_live_run=item.run is not None,
            run_immutable=item.run_immutable,
        )
        reach = max(c.invoice_at, c.service_period.end)
        derived = _derive(conn, namespace, c.subscription_id, c.identity, at, reach)
        return Explained(explain_charge(derived.view, stored, derived.candidate, derived.charge, at), rows[0])

    return rolled_back(engine, work)  # read-only: nothing to keep
