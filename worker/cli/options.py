"""Option types shared by the commands: RFC 3339 times, namespaces and ids (docs/contract.md §3 syntax), and the
enumerations offered as listed choices with shell completion (event types, invoice statuses).

Nothing here imports pydantic or the database layer at module import: the checks import what they
need when an option is parsed (`subsync --help` stays fast, issue 14)."""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import typer


def parse_timestamp(value: str) -> datetime:
    """Typer parser for RFC 3339 options (`--at`, `--as-of`, `--deleted-at`); returns UTC."""
    # lazy: the contract's time parser, loaded when a time option is given
    from worker.contract.text import parse_time

    try:
        return parse_time(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} {exc}") from None


def timestamp_option(*param_decls: str, help: str) -> Any:
    """An RFC 3339 option: `at: Annotated[datetime | None, timestamp_option("--at", help=…)] = None`."""
    return typer.Option(*param_decls, parser=parse_timestamp, metavar="TS", help=help)


def identifier_callback(value: str | None) -> str | None:
    """Typer callback checking namespace / id syntax (docs/contract.md §3 limits)."""
    # lazy: the contract's field rules import pydantic; loaded when an id option is given
    from worker.contract.fields import is_valid_id

    if value is not None and not is_valid_id(value):
        raise typer.BadParameter(
            f"{value!r} must be 1-128 characters of A-Z a-z 0-9 . _ : - starting with a letter or digit"
        )
    return value


def text_callback(value: str | list[str] | None) -> str | list[str] | None:
    """Typer callback for free-text options (`customers upsert --name`, `credits grant --feature`): docs/contract.md
    §3 limits "text" and "names" — no NUL, no lone surrogate, at most 1,024 characters (exit 2, not a crash
    when the database or the terminal cannot take it)."""
    # lazy: the contract's field rules import pydantic; loaded when a text option is given
    from worker.contract.fields import MAX_TEXT_LENGTH, printable, text_problem

    for text in value if isinstance(value, list) else [value]:
        if text is None:
            continue
        problem = text_problem(text)
        if problem is None and len(text) > MAX_TEXT_LENGTH:
            problem = f"must be at most {MAX_TEXT_LENGTH} characters"
        if problem is not None:
            raise typer.BadParameter(f"{printable(text[:40])} {problem}")
    return value


def finite_seconds(minimum: float, maximum: float) -> Any:
    """A callback for a float option of seconds: a finite number in [minimum, maximum] (not nan, not inf)."""

    def check(value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and minimum <= value <= maximum):
            raise typer.BadParameter(f"{value!r} must be a number of seconds from {minimum:,.10g} to {maximum:,.10g}")
        return value

    return check


NamespaceOption = Annotated[
    str, typer.Option("--namespace", metavar="NS", help="Tenant namespace.", callback=identifier_callback)
]
IdOption = Annotated[
    str, typer.Option("--id", metavar="ID", help="Id within the namespace.", callback=identifier_callback)
]


class EventType(StrEnum):
    """The event types of docs/contract.md §4 (`worker.contract.events.EVENT_TYPES`; a test keeps them equal)."""

    subscription_created = "subscription.created"
    subscription_updated = "subscription.updated"
    subscription_cancelled = "subscription.cancelled"
    subscription_continued = "subscription.continued"
    subscription_deleted = "subscription.deleted"
    invoice_created = "invoice.created"


class InvoiceStatus(StrEnum):
    """The statuses `invoices set-status` may set (`worker.store.invoices.SETTABLE_STATUSES`)."""

    draft = "draft"
    issued = "issued"
    paid = "paid"
    voided = "voided"
