"""`subsync subscriptions`: apply, get and delete subscription documents (CONTRACT §3)."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from worker.app.subscriptions import apply_subscription, delete_subscription, get_subscription
from worker.cli.options import IdOption, NamespaceOption, timestamp_option
from worker.cli.output import FormatOption, emit, print_table
from worker.cli.runtime import get_runtime
from worker.contract.documents import MAX_DOCUMENT_BYTES, parse_document, to_document
from worker.contract.problems import DocumentError, Problem
from worker.contract.text import format_optional_time
from worker.errors import InvalidInputError
from worker.infra.logging import get_logger
from worker.store.subscriptions import StoredSubscription

log = get_logger("worker.cli")

app = typer.Typer(help="Subscription documents.", no_args_is_help=True)


def _read_document(file: str) -> bytes:
    try:
        if file == "-":
            return sys.stdin.buffer.read(MAX_DOCUMENT_BYTES + 1)
        with Path(file).open("rb") as handle:
            return handle.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise InvalidInputError(f"cannot read {file}: {exc.strerror or exc}") from None


def _print_document(fmt: Any, stored: StoredSubscription) -> None:
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
                            key,
                            f"v[{index}]",
                            version["id"],
                            version["active_from"],
                            version["active_to"] or "",
                            version["rate_card"]["billing_cadence"] or "one-time",
                            _price_summary(price),
                        ]
                    )
            if not phase["items"]:
                rows.append([phase["key"], "", "", "", phase["active_from"], "", "", ""])
        print_table(title, ["phase", "item", "version", "item id", "from", "to", "cadence", "price"], rows)

    emit(fmt, data, table=table)


def _price_summary(price: dict[str, Any] | None) -> str:
    if price is None:
        return "-"
    details = {k: v for k, v in price.items() if k not in ("type", "tiers")}
    text = str(price["type"]) + "".join(f" {k}={v}" for k, v in details.items())
    if "tiers" in price:
        text += f" ({len(price['tiers'])} tiers)"
    return text


@app.command("apply")
def subscriptions_apply(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(metavar="FILE", help="Subscription document (JSON); '-' reads stdin.")],
    fmt: FormatOption = None,
) -> None:
    """Validate a subscription document and insert or replace the subscription."""
    raw = _read_document(file)
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise DocumentError([Problem("", f"the document is larger than {MAX_DOCUMENT_BYTES // 1024} KiB")])
    document = parse_document(raw)
    stored = apply_subscription(get_runtime(ctx).engine(), document)
    log.info(
        "subscription created" if stored.created else "subscription replaced",
        namespace=stored.document.namespace,
        subscription_id=stored.document.id,
    )
    _print_document(fmt, stored)


@app.command("get")
def subscriptions_get(
    ctx: typer.Context, namespace: NamespaceOption, subscription_id: IdOption, fmt: FormatOption = None
) -> None:
    """Print the stored subscription document."""
    stored = get_subscription(get_runtime(ctx).engine(), namespace, subscription_id)
    if stored.deleted_at is not None:
        log.warning("subscription is soft-deleted", deleted_at=format_optional_time(stored.deleted_at))
    _print_document(fmt, stored)


@app.command("delete")
def subscriptions_delete(
    ctx: typer.Context,
    namespace: NamespaceOption,
    subscription_id: IdOption,
    at: Annotated[datetime | None, timestamp_option("--at", help="Deletion time (default: now).")] = None,
    fmt: FormatOption = None,
) -> None:
    """Soft-delete a subscription."""
    deleted_at = delete_subscription(get_runtime(ctx).engine(), namespace, subscription_id, at)
    data = {"namespace": namespace, "id": subscription_id, "deleted_at": format_optional_time(deleted_at)}
    emit(fmt, data, table=lambda: print_table("deleted subscription", list(data), [list(data.values())]))
