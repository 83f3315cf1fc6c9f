"""What each actor does (docs/sync.md §8.2-8.4), as plain functions of an engine and a validated event.

The actors in `worker.queue.actors` only parse the payload, bind the log context and call these; they are
tested here directly against a real database. Every handler syncs the **stored** state: the event
type only chooses `as_of` and whether the customer is invoiced afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine

from worker.app.charges import advance_customer, iter_due_customers
from worker.app.invoicing import CreatedInvoice, invoice_pending_lines
from worker.app.sync import AsOf, SyncResult, sync_subscription
from worker.config import DEFAULT_MAX_TARGET_LINES
from worker.contract.events import AdvanceChargesRequest, InvoiceCreatedEvent, ReconcileRequest, SubscriptionEvent
from worker.infra.clock import utcnow
from worker.infra.logging import get_logger
from worker.store.db import run_transaction
from worker.store.due import iter_due_pages
from worker.store.queries import subscriptions_on_invoice

log = get_logger(__name__)

#: Publishes an `invoice.created` event (the worker passes `worker.queue.publish.publish`).
Publisher = Callable[[InvoiceCreatedEvent], object]


@dataclass(frozen=True, slots=True)
class Handled:
    """What handling one message did."""

    syncs: tuple[SyncResult, ...] = ()
    invoices: tuple[CreatedInvoice, ...] = ()
    published: tuple[str, ...] = ()  # invoice ids whose invoice.created was published
    skipped: str | None = None  # why nothing was done, when nothing was
    customer_id: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Patch counts by op over every sync."""
        total: dict[str, int] = {}
        for result in self.syncs:
            for op, n in result.counts().items():
                total[op] = total.get(op, 0) + n
        return total


# --- subscription events -----------------------------------------------------------------------


def sync_as_of(event: SubscriptionEvent, now: datetime) -> AsOf:
    """docs/sync.md §8.2: the event's `as_of` if given; `subscription.cancelled` → the stored `active_to` of the row
    the sync locks (now when it has none: the subscription was continued since); otherwise now."""
    if event.as_of is not None:
        return event.as_of
    if event.type != "subscription.cancelled":
        return now
    return lambda record: record.active_to if record.active_to is not None else now


def handle_subscription_event(
    engine: Engine,
    event: SubscriptionEvent,
    *,
    invoice_after_sync: bool = True,
    publish: Publisher | None = None,
    now: datetime | None = None,
    max_target_lines: int = DEFAULT_MAX_TARGET_LINES,
    reuse: bool = True,
) -> Handled:
    """Sync the subscription; then, unless it is deleted, invoice its customer's pending lines
    (docs/sync.md §8.3, when `invoice_after_sync`) and publish `invoice.created` for each new invoice."""
    now = now or utcnow()
    as_of = sync_as_of(event, now)
    invoicing = invoice_after_sync and event.type != "subscription.deleted"
    result = sync_subscription(
        engine,
        event.namespace,
        event.subscription_id,
        as_of=as_of,
        now=now,
        max_target_lines=max_target_lines,
        due_at=(event.as_of or now) if invoicing else None,  # the x of `invoice_after` below
        reuse=reuse,
    )
    created: list[CreatedInvoice] = []
    published: list[str] = []
    # `maybe_due` False: docs/sync.md §9 would find no billable line, so it would write nothing (docs/sync.md §8.3).
    if invoicing and not result.subscription_deleted and result.maybe_due is not False:
        created, published = invoice_after(engine, event.namespace, result.customer_id, event.as_of, publish, now)
    advanced = advance_after((result,), engine, event.as_of, now)
    return Handled(
        syncs=(result,),
        invoices=tuple(created),
        published=tuple(published),
        customer_id=result.customer_id,
        extra=advanced,
    )


def advance_after(
    results: Sequence[SyncResult], engine: Engine, as_of: datetime | None, now: datetime
) -> dict[str, object]:
    """docs/credits.md §2.5: after a successful sync of a credit-mode subscription (and after the invoicing step),
    advance its customer's due charges as of the event's override, else now, in their own transaction."""
    customers = sorted(
        {(r.namespace, r.customer_id) for r in results if not r.dry_run and r.settlement_mode != "invoice_only"}
    )
    changed = 0
    for namespace, customer_id in customers:
        changed += len(advance_customer(engine, namespace, customer_id, as_of=as_of or now, now=now))
    return {"charges_advanced": changed} if customers else {}


class InvoicesNotPublished(Exception):
    """Invoicing committed, but `invoice.created` could not be published for `events` (Redis down).

    A retry of the message would create no new invoice, so it would never publish them: the queue
    keeps them with the message (`worker.queue.middleware.owed_invoice_events`) and the retry's actor
    publishes them first. Classified like `cause` (usually `broker_unavailable`, transient)."""

    def __init__(self, events: Sequence[InvoiceCreatedEvent], cause: BaseException) -> None:
        super().__init__(f"invoice.created not published for {', '.join(e.invoice_id for e in events)}: {cause}")
        self.events = tuple(events)
        self.cause = cause


def publish_all(events: Sequence[InvoiceCreatedEvent], publish: Publisher) -> list[str]:
    """Publish each event; on a failure raise InvoicesNotPublished with it and the ones after it."""
    published: list[str] = []
    for index, invoice_event in enumerate(events):
        try:
            publish(invoice_event)
        except Exception as exc:
            raise InvoicesNotPublished(events[index:], exc) from exc
        published.append(invoice_event.invoice_id)
    return published


def invoice_after(
    engine: Engine,
    namespace: str,
    customer_id: str,
    as_of: datetime | None,
    publish: Publisher | None,
    now: datetime,
) -> tuple[list[CreatedInvoice], list[str]]:
    """docs/sync.md §8.3 then §9 step 6: invoice without progressive splitting, as of the event's override
    (else now), after the sync committed; publish `invoice.created` for every invoice created.

    The `invoice.created` events carry the same `as_of` override, so a back-fill stays at its horizon."""
    created = invoice_pending_lines(engine, namespace, customer_id, as_of=as_of, progressive=False, now=now)
    if publish is None:
        return created, []
    events = [
        InvoiceCreatedEvent.new(
            namespace=namespace, invoice_id=invoice.id, as_of=as_of, event_id=f"{invoice.id}:created", occurred_at=now
        )
        for invoice in created
    ]
    return created, publish_all(events, publish)


# --- invoice.created ---------------------------------------------------------------------------


def handle_invoice_created(
    engine: Engine,
    event: InvoiceCreatedEvent,
    *,
    now: datetime | None = None,
    max_target_lines: int = DEFAULT_MAX_TARGET_LINES,
    reuse: bool = True,
) -> Handled:
    """Re-sync every subscription with a live line on the invoice (ignore gathering invoices)."""
    now = now or utcnow()
    invoice_type, subscription_ids = run_transaction(
        engine, lambda conn: subscriptions_on_invoice(conn, event.namespace, event.invoice_id)
    )
    if invoice_type == "gathering":
        return Handled(skipped="gathering invoice")
    as_of = event.as_of or now
    results = tuple(
        sync_subscription(
            engine,
            event.namespace,
            subscription_id,
            as_of=as_of,
            now=now,
            max_target_lines=max_target_lines,
            reuse=reuse,
        )
        for subscription_id in subscription_ids
    )
    customers = {r.customer_id for r in results}
    advanced = advance_after(results, engine, event.as_of, now)
    return Handled(
        extra=advanced,
        syncs=results,
        skipped=None if results else "no subscription lines on the invoice",
        customer_id=next(iter(customers)) if len(customers) == 1 else None,
    )


# --- reconcile ---------------------------------------------------------------------------------


def handle_reconcile_subscription(
    engine: Engine,
    request: ReconcileRequest,
    *,
    now: datetime | None = None,
    max_target_lines: int = DEFAULT_MAX_TARGET_LINES,
    reuse: bool = True,
) -> Handled:
    """docs/sync.md §8.4: sync as of now, with no invoicing step."""
    now = now or utcnow()
    result = sync_subscription(
        engine,
        request.namespace,
        request.subscription_id,
        as_of=now,
        now=now,
        max_target_lines=max_target_lines,
        reuse=reuse,
    )
    return Handled(syncs=(result,), customer_id=result.customer_id, extra=advance_after((result,), engine, None, now))


def handle_reconcile_due(
    engine: Engine,
    enqueue: Callable[[Sequence[ReconcileRequest]], object],
    *,
    now: datetime | None = None,
    page_size: int = 500,
    namespace: str | None = None,
) -> Handled:
    """docs/sync.md §8.4: enqueue a `reconcile_subscription` for every due subscription, page by page."""
    now = now or utcnow()
    total = 0
    for page in iter_due_pages(engine, now, page_size=page_size, namespace=namespace):
        requests = [ReconcileRequest(namespace=d.namespace, subscription_id=d.subscription_id) for d in page]
        enqueue(requests)
        total += len(requests)
    return Handled(extra={"enqueued": total})


# --- advance_charges (docs/credits.md §2.5) ------------------------------------------------------------------


def handle_advance_charges(
    engine: Engine,
    request: AdvanceChargesRequest | None,
    enqueue: Callable[[Sequence[AdvanceChargesRequest]], object],
    *,
    now: datetime | None = None,
    page_size: int = 500,
) -> Handled:
    """Without a request: enqueue one `advance_charges` per customer with a due charge, page by page (like
    `reconcile_due`); with one: advance that customer's due charges as of its `as_of` (default now)."""
    now = now or utcnow()
    if request is None:
        total = 0
        for page in iter_due_customers(engine, now, page_size=page_size):
            enqueue([AdvanceChargesRequest(namespace=ns, customer_id=cid) for ns, cid in page])
            total += len(page)
        return Handled(extra={"enqueued": total})
    changes = advance_customer(engine, request.namespace, request.customer_id, as_of=request.as_of or now, now=now)
    return Handled(
        customer_id=request.customer_id,
        skipped=None if changes else "no charge was due",
        extra={"charges_advanced": len(changes)},
    )
