"""`subsync subscriptions`: apply, get and delete subscription documents (docs/contract.md §3).

`apply` takes one document (a file, or `-` for stdin) and prints the stored document, as docs/contract.md §5
says; given several files, a folder, or JSON lines on stdin it applies them in bulk (docs/contract.md
§5): each document is validated and each valid one applied in its own transaction, then a report says
what became of each (exit 1 when any failed)."""

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from worker.cli import bulk
from worker.cli.options import IdOption, NamespaceOption, timestamp_option
from worker.cli.output import Column, FormatOption, WideOption, emit, print_record, print_table
from worker.cli.runtime import get_runtime

if TYPE_CHECKING:
    from worker.store.subscriptions import StoredSubscription

app = typer.Typer(help="Subscription documents.", no_args_is_help=True)


def _max_bytes() -> int:
    # lazy: the document model imports pydantic
    from worker.contract.documents import MAX_DOCUMENT_BYTES

    return MAX_DOCUMENT_BYTES


def _print_document(fmt: Any, stored: "StoredSubscription", *, wide: bool = False) -> None:
    # lazy: the document model imports pydantic
    from worker.contract.document_json import to_document
    from worker.contract.text import format_optional_time

    data = to_document(stored.document)

    def table() -> None:
        title = (
            f"{data['namespace']}/{data['id']}  customer {data['customer_id']}  {data['currency']}"
            f"  {data['billing_cadence']}  {data['active_from']} → {data['active_to'] or '∞'}"
        )
        if stored.deleted_at is not None:
            title += f"  (deleted {format_optional_time(stored.deleted_at)})"
        rows = []
        for phase in data["phases"]:
            for key, versions in phase["items"].items():
                for index, version in enumerate(versions):
                    price = version["rate_card"]["price"]
                    rows.append(
                        [
                            phase["key"],
                            f"{key} v[{index}]",
                            version["id"],
                            version["active_from"],
                            version["active_to"] or "",
                            version["rate_card"]["billing_cadence"] or "one-time",
                            _price_summary(price),
                        ]
                    )
            if not phase["items"]:
                rows.append([phase["key"], "", "", phase["active_from"], "", "", ""])
        columns = [
            Column("phase", "id"),
            Column("item", "id"),
            Column("item id", "id"),
            Column("from", "time"),
            Column("to", "time"),
            Column("cadence"),
            Column("price", "long"),
        ]
        print_table(title, columns, rows, wide=wide)

    emit(fmt, data, table=table)


def _price_summary(price: dict[str, Any] | None) -> str:
    if price is None:
        return "-"
    details = {k: v for k, v in price.items() if k not in ("type", "tiers")}
    text = str(price["type"]) + "".join(f" {k}={v}" for k, v in details.items())
    if "tiers" in price:
        text += f" ({len(price['tiers'])} tiers)"
    return text


# --- apply -------------------------------------------------------------------------------------


def _apply_one(engine: Any, source: "bulk.Source", limit: int) -> "bulk.Applied":
    """Validate and apply one document in its own transaction (errors raise: `bulk.apply_all` reports them)."""
    # lazy: the document model (pydantic) and the use case (SQLAlchemy)
    from worker.app.subscriptions import apply_subscription
    from worker.contract.documents import parse_document
    from worker.contract.problems import DocumentError, Problem

    raw = source.raw or b""
    if len(raw) > limit:
        raise DocumentError([Problem("", f"the document is larger than {limit // 1024} KiB")])
    applied = apply_subscription(engine, parse_document(raw))
    return {
        "result": "created" if applied.created else "replaced",
        "namespace": applied.document.namespace,
        "id": applied.document.id,
    }


@app.command("apply")
def subscriptions_apply(
    ctx: typer.Context,
    files: Annotated[
        list[str],
        typer.Argument(
            metavar="FILE...",
            help="Subscription documents (JSON): files, folders (their *.json), or '-' for stdin "
            "(one document, or JSON lines: one document per line).",
        ),
    ],
    fmt: FormatOption = None,
    wide: WideOption = False,
) -> None:
    """Validate subscription documents and insert or replace each subscription.

    One document prints the stored document. Several (files, a folder, JSON lines) are applied one
    transaction each, valid ones even when others are invalid; a report lists each, and the command
    exits 1 when any failed."""
    from worker.infra.logging import get_logger  # lazy: structlog

    log = get_logger("worker.cli")
    limit = _max_bytes()
    sources, many = bulk.sources(files, limit)
    runtime = get_runtime(ctx)
    if not many:
        # lazy: the document model (pydantic) and the use case (SQLAlchemy)
        from worker.app.subscriptions import apply_subscription
        from worker.contract.documents import parse_document
        from worker.contract.problems import DocumentError, Problem

        raw = sources[0].raw or b""
        if len(raw) > limit:
            raise DocumentError([Problem("", f"the document is larger than {limit // 1024} KiB")])
        stored = apply_subscription(runtime.engine(), parse_document(raw))
        log.info(
            "subscription created" if stored.created else "subscription replaced",
            namespace=stored.document.namespace,
            subscription_id=stored.document.id,
        )
        _print_document(fmt, stored, wide=wide)
        return
    engine = runtime.engine()
    bulk.apply_all(
        sources,
        lambda source: _apply_one(engine, source, limit),
        command="subscriptions apply",
        noun="document",
        identity="subscription",
        fmt=fmt,
        wide=wide,
    )


@app.command("get")
def subscriptions_get(
    ctx: typer.Context,
    namespace: NamespaceOption,
    subscription_id: IdOption,
    fmt: FormatOption = None,
    wide: WideOption = False,
) -> None:
    """Print the stored subscription document."""
    # lazy: the use case imports SQLAlchemy
    from worker.app.subscriptions import get_subscription
    from worker.contract.text import format_optional_time
    from worker.infra.logging import get_logger

    stored = get_subscription(get_runtime(ctx).engine(), namespace, subscription_id)
    if stored.deleted_at is not None:
        get_logger("worker.cli").warning(
            "subscription is soft-deleted", deleted_at=format_optional_time(stored.deleted_at)
        )
    _print_document(fmt, stored, wide=wide)


@app.command("delete")
def subscriptions_delete(
    ctx: typer.Context,
    namespace: NamespaceOption,
    subscription_id: IdOption,
    at: Annotated[datetime | None, timestamp_option("--at", help="Deletion time (RFC 3339; default: now).")] = None,
    fmt: FormatOption = None,
) -> None:
    """Soft-delete a subscription."""
    # lazy: the use case imports SQLAlchemy
    from worker.app.subscriptions import delete_subscription
    from worker.contract.text import format_optional_time

    deleted_at = delete_subscription(get_runtime(ctx).engine(), namespace, subscription_id, at)
    data = {"namespace": namespace, "id": subscription_id, "deleted_at": format_optional_time(deleted_at)}
    emit(fmt, data, table=lambda: print_record("deleted subscription", data))
