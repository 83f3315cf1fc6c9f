"""`subsync demo`: seed sample subscriptions, publish their events, run a worker until they are handled.

The demo lives in namespace `demo` with fixed ids, so running it again re-applies the same
subscriptions and converges to the same rows. Dates are relative to the current month: the invoiced
subscription started two months ago with a "launch" phase (a flat in-advance platform fee and a
usage-based API-calls item) and moved to a "growth" phase last month. Beside it, the same customer has a
`credit_only` subscription (docs/credits.md §1: charges instead of invoice lines) for a monthly support plan,
started two months ago too, and a credit grant with a fixed id: the worker's sync writes the charges and
its advance books the due ones against the grant (docs/credits.md §3.6), so the balance is the grant minus them.
"""

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import typer

from worker.cli.output import FormatOption, WideOption, emit, print_spec
from worker.cli.presenters import line_json, lines_table
from worker.cli.progress import Steps
from worker.cli.runtime import get_runtime
from worker.contract.text import format_time
from worker.errors import ConflictError, SubsyncError

if TYPE_CHECKING:
    from dramatiq.brokers.redis import RedisBroker
    from sqlalchemy import Engine

    from worker.config import Settings

DEMO_NAMESPACE = "demo"
DEMO_CUSTOMER = "demo-customer"
DEMO_SUBSCRIPTION = "demo-subscription"
DEMO_CREDIT_SUBSCRIPTION = "demo-credit-subscription"
DEMO_GRANT = "demo-grant"
DEMO_GRANT_AMOUNT = "100"
DEMO_SUPPORT_FEE = "25"


class DemoTimeout(RuntimeError):
    """The worker did not drain the queue in time."""


@dataclass(frozen=True, slots=True)
class DemoResult:
    lines: list[Any]  # the customer's invoice lines (the credit_only subscription has none)
    charges: list[Any]  # the credit subscription's charges, with their runs and allocation rows
    balances: list[Any]  # the customer's credit balance, per currency


def _month_start(now: datetime, months_back: int) -> datetime:
    month_index = now.year * 12 + (now.month - 1) - months_back
    return datetime(month_index // 12, month_index % 12 + 1, 1, tzinfo=UTC)


def demo_document(now: datetime) -> dict[str, Any]:
    """The demo subscription (docs/contract.md §3 shape), dated relative to `now`."""
    # lazy: the builders are shared with the tests and the bench; loaded when the demo runs
    from worker.contract.builders import flat, item_version, rate_card, unit

    start = format_time(_month_start(now, 2))
    growth = format_time(_month_start(now, 1))

    def phase(key: str, name: str, active_from: str, fee: str, per_call: str) -> dict[str, Any]:
        return {
            "key": key,
            "id": f"demo-phase-{key}",
            "name": name,
            "active_from": active_from,
            "sort_hint": None,
            "items": {
                "platform-fee": [
                    item_version(active_from, None, rate_card("Platform fee", flat(fee)), id=f"demo-item-{key}-fee")
                ],
                "api-calls": [
                    item_version(
                        active_from,
                        None,
                        rate_card("API calls", unit(per_call), feature_key="api-calls"),
                        id=f"demo-item-{key}-calls",
                    )
                ],
            },
        }

    return {
        "namespace": DEMO_NAMESPACE,
        "id": DEMO_SUBSCRIPTION,
        "customer_id": DEMO_CUSTOMER,
        "name": "Demo plan",
        "currency": "USD",
        "billing_cadence": "P1M",
        "billing_anchor": start,
        "pro_rating": {"enabled": True, "mode": "prorate_prices"},
        "active_from": start,
        "active_to": None,
        "phases": [
            phase("launch", "Launch", start, "49", "0.002"),
            phase("growth", "Growth", growth, "99", "0.0015"),
        ],
    }


def demo_credit_document(now: datetime) -> dict[str, Any]:
    """The demo's credit_only subscription (docs/credits.md §2.1): one flat in-advance support plan, same customer."""
    # lazy: the builders are shared with the tests and the bench; loaded when the demo runs
    from worker.contract.builders import flat, item_version, rate_card

    start = format_time(_month_start(now, 2))
    card = rate_card("Support plan", flat(DEMO_SUPPORT_FEE))
    return {
        "namespace": DEMO_NAMESPACE,
        "id": DEMO_CREDIT_SUBSCRIPTION,
        "customer_id": DEMO_CUSTOMER,
        "name": "Demo support (prepaid credit)",
        "currency": "USD",
        "settlement_mode": "credit_only",
        "billing_cadence": "P1M",
        "billing_anchor": start,
        "pro_rating": {"enabled": True, "mode": "prorate_prices"},
        "active_from": start,
        "active_to": None,
        "phases": [
            {
                "key": "default",
                "id": "demo-phase-support",
                "name": "Support",
                "active_from": start,
                "sort_hint": None,
                "items": {"support": [item_version(start, None, card, id="demo-item-support")]},
            }
        ],
    }


def seed(engine: "Engine", now: datetime) -> dict[str, bool]:
    """Write the demo customer, its two subscriptions and its credit grant; per subscription id, True when
    it was new."""
    # lazy: the document model (pydantic) and the use cases (SQLAlchemy)
    from worker.app.credits import GrantRequest, grant_credit
    from worker.app.subscriptions import apply_subscription, upsert_customer
    from worker.contract.documents import validate_document

    upsert_customer(engine, DEMO_NAMESPACE, DEMO_CUSTOMER, name="Demo customer")
    created = {
        document["id"]: bool(apply_subscription(engine, validate_document(document)).created)
        for document in (demo_document(now), demo_credit_document(now))
    }
    grant = GrantRequest(
        customer_id=DEMO_CUSTOMER,
        currency="USD",
        amount=Decimal(DEMO_GRANT_AMOUNT),
        effective_at=_month_start(now, 2),  # it covers every charge of the credit subscription
        id=DEMO_GRANT,
    )
    # The same grant again writes nothing (docs/credits.md §2.3 `--id`); on a re-run in a later month its effective_at
    # differs (ConflictError) and the first run's grant, effective earlier, stays.
    with contextlib.suppress(ConflictError):
        grant_credit(engine, DEMO_NAMESPACE, grant)
    return created


def drain(broker: "RedisBroker", *, timeout_seconds: float = 60.0, threads: int = 2) -> None:
    """Run an in-process worker until the queue (ready, in-flight and delayed) is empty."""
    # lazy: Dramatiq, loaded when the demo runs
    import dramatiq
    from dramatiq.errors import QueueJoinTimeout

    from worker.contract.events import QUEUE_NAME
    from worker.queue.broker import boot_once

    boot_once(broker)
    worker = dramatiq.Worker(broker, queues={QUEUE_NAME}, worker_threads=threads, worker_timeout=100)
    worker.start()
    try:
        broker.join(QUEUE_NAME, interval=50, timeout=int(timeout_seconds * 1000))
    except QueueJoinTimeout:
        raise DemoTimeout(
            f"the worker did not handle the demo events within {timeout_seconds:g} s "
            "(see `subsync status` and `subsync dead-letters list`)"
        ) from None
    finally:
        worker.stop(timeout=10_000)


def run_demo(
    settings: "Settings",
    engine: "Engine",
    broker: "RedisBroker",
    *,
    now: datetime | None = None,
    step: Callable[[str], None] = lambda text: None,
) -> "DemoResult":
    """Seed, publish `subscription.created` (or `.updated` on a re-run) for each subscription, drain, return
    the customer's lines, the credit subscription's charges and the customer's credit balance."""
    # lazy: the composition root, events and queue import SQLAlchemy, pydantic and Dramatiq
    from worker import bootstrap
    from worker.app.charges import list_charges
    from worker.app.credits import customer_balance
    from worker.contract.events import SubscriptionEvent
    from worker.infra.clock import utcnow
    from worker.infra.logging import get_logger
    from worker.queue.publish import publish
    from worker.store.lines import list_lines

    now = now or utcnow()
    bootstrap.worker(settings, broker, engine=lambda: engine)
    step("seeding the demo subscriptions and credit grant, publishing their events")
    for subscription_id, created in seed(engine, now).items():
        event = SubscriptionEvent.new(
            "subscription.created" if created else "subscription.updated",
            namespace=DEMO_NAMESPACE,
            subscription_id=subscription_id,
        )
        message_id = publish(event, broker=broker)
        get_logger(__name__).info("demo event published", event_type=event.type, message_id=message_id)
    step("waiting for the worker to handle them")
    drain(broker)  # the worker syncs each subscription, then advances (books) the customer's due charges
    with engine.connect() as conn:
        lines = list_lines(conn, DEMO_NAMESPACE, customer_id=DEMO_CUSTOMER)
    charges = list_charges(engine, DEMO_NAMESPACE, subscription_id=DEMO_CREDIT_SUBSCRIPTION)
    return DemoResult(lines, charges, customer_balance(engine, DEMO_NAMESPACE, DEMO_CUSTOMER, at=now))


def demo(ctx: typer.Context, fmt: FormatOption = None, wide: WideOption = False) -> None:
    """Seed a customer with an invoiced and a credit-settled subscription and a credit grant, publish
    their events, run a worker until they are handled, print the lines, charges and credit balance.

    Without DATABASE_URL / REDIS_URL it starts the embedded Postgres and Redis; they stay up for the
    next commands (`subsync embedded status`, `subsync embedded stop`)."""
    runtime = get_runtime(ctx)
    settings = runtime.settings
    embedded = settings.uses_embedded_database or settings.uses_embedded_redis
    step = Steps(6 if settings.uses_embedded_database else 5)
    if settings.uses_embedded_database:
        step("starting the embedded database")
        url = runtime.database_url(migrate_embedded=False)
        step("migrating the database")
        from worker.store import migrations  # lazy: Alembic costs ~0.2 s of start-up

        migrations.upgrade(url)
    else:
        step("connecting to the database")  # a configured database is migrated only by `subsync db upgrade`
        runtime.database_url(migrate_embedded=False)
    step("starting the embedded broker" if settings.uses_embedded_redis else "connecting to the broker")
    broker = runtime.broker()
    try:
        result = run_demo(settings, runtime.engine(), broker, step=step)
    except DemoTimeout as exc:
        raise SubsyncError(str(exc)) from None
    step("done")
    if embedded:
        sys.stderr.write(
            f"note: the embedded servers under {settings.home_path} stay up for the next commands; "
            "see them with `subsync embedded status`, stop them with `subsync embedded stop`\n"
        )
    # lazy: the charge and credit presenters import the use cases (SQLAlchemy)
    from worker.cli.charges import charge_json, charges_table
    from worker.cli.credits import balance_json, balance_table

    charges = [charge_json(entry) for entry in result.charges]
    balances = [balance_json(b) for b in result.balances]
    # JSON: the invoice lines, as docs/contract.md §5 promises; the credit part is in the table, and as JSON
    # from `subsync charges list --subscription demo-credit-subscription` and `subsync credits balance`.
    data = [line_json(row) for row in result.lines]

    def table() -> None:
        title = f"Invoice lines of customer {DEMO_CUSTOMER} (namespace {DEMO_NAMESPACE})"
        print_spec(lines_table(result.lines, title), wide=wide)
        charges_table(charges, f"Charges of the credit_only subscription {DEMO_CREDIT_SUBSCRIPTION}")
        balance_table(balances, f"Credit balance of customer {DEMO_CUSTOMER} (grant {DEMO_GRANT})")

    emit(fmt, data, table=table)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
