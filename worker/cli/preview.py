"""`subsync preview`: the lines and charges the syncs and charge advances of a subscription (stored, or a document
not yet applied) would create or change up to a time, grouped by `invoice_at` month and currency, with a compact
timeline picture; written nothing (docs/sync.md §10.2)."""

import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from worker.cli.options import identifier_callback, timestamp_option
from worker.cli.output import Column, FormatOption, TableSpec, WideOption, emit, print_spec
from worker.cli.runtime import get_runtime
from worker.errors import InvalidInputError

#: The timeline picture shows at most this many months (one character each).
MAX_MONTHS = 48
LEGEND = "= in advance  - in arrears  ~ usage  · nothing  (one character a month)"


def register(root: typer.Typer) -> None:
    root.command("preview")(preview)


def preview(
    ctx: typer.Context,
    to: Annotated[datetime, timestamp_option("--to", help="Preview up to this time (RFC 3339).")],
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace", metavar="NS", help="Tenant namespace (with --subscription).", callback=identifier_callback
        ),
    ] = None,
    subscription_id: Annotated[
        str | None,
        typer.Option("--subscription", metavar="ID", help="A stored subscription.", callback=identifier_callback),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", metavar="DOC", help="A subscription document not yet applied (JSON)."),
    ] = None,
    start: Annotated[datetime | None, timestamp_option("--from", help="Start of the timeline (default: now).")] = None,
    invoice: Annotated[
        bool,
        typer.Option("--invoice", help="Also invoice pending lines after each sync, as after an event (SPEC 8.3)."),
    ] = False,
    fmt: FormatOption = None,
    wide: WideOption = False,
) -> None:
    """Preview what syncing (and advancing charges) up to --to would create or change; writes nothing."""
    if (subscription_id is None) == (file is None):
        raise InvalidInputError("give exactly one of --subscription and --file")
    if subscription_id is not None and namespace is None:
        raise InvalidInputError("--subscription needs --namespace")
    # lazy: the use case imports SQLAlchemy, the document model pydantic
    from worker.app.preview import preview_document, preview_subscription

    runtime = get_runtime(ctx)
    limit = runtime.settings.max_target_lines
    if file is not None:
        from worker.cli.subscriptions import read_document

        document = read_document(file)
        if namespace is not None and namespace != document.namespace:
            raise InvalidInputError(f"--namespace {namespace!r} is not the document's namespace {document.namespace!r}")
        data = preview_document(runtime.engine(), document, to=to, start=start, invoice=invoice, max_target_lines=limit)
    else:
        assert namespace is not None and subscription_id is not None
        data = preview_subscription(
            runtime.engine(), namespace, subscription_id, to=to, start=start, invoice=invoice, max_target_lines=limit
        )
    emit(fmt, data, table=lambda: _tables(data, wide=wide))


def _day(text: str | None) -> str:
    """A time as tables print it: to the second, the date alone at midnight."""
    if text is None:
        return "-"
    return re.sub(r"\.\d+Z$", "Z", text).removesuffix("T00:00:00Z")


def _span(period: dict[str, str | None]) -> str:
    """`2024-01-10→02-01`: the end without its year when it is the start's."""
    start, end = _day(period["from"]), _day(period["to"])
    if start[:5] == end[:5] and len(end) > 5:
        end = end[5:]
    return f"{start}→{end}"


def _tables(data: dict[str, Any], *, wide: bool) -> None:
    prefix = f"{data['subscription_id']}/"
    title = (
        f"preview {data['subscription_id']} {data['from'][:10]} → {data['to'][:10]}: "
        f"{len(data['lines'])} line(s), {len(data['charges'])} charge(s)"
    )
    month_rows = [[m["month"], m["currency"], str(m["lines"]), str(m["charges"]), m["total"]] for m in data["months"]]
    month_columns = [
        Column("invoice_at month"),
        Column("currency"),
        Column("lines", "number"),
        Column("charges", "number"),
        Column("total", "number"),
    ]
    print_spec(TableSpec(title, month_columns, month_rows), wide=wide)
    for kind in ("lines", "charges"):
        rows = [
            [
                r["change"],
                (r["unique_reference_id"] or r["id"]).removeprefix(prefix),
                _span(r["service_period"]),
                _day(r["invoice_at"]),
                r["amount"] or "-",
                *([_credits(r)] if kind == "charges" else []),
            ]
            for r in data[kind]
        ]
        if rows:
            columns = [
                Column("change"),
                Column("item", "id"),
                Column("service period", "value"),
                Column("invoice_at", "time"),
                Column("amount", "number"),
                *([Column("credits by grant")] if kind == "charges" else []),
            ]
            print_spec(TableSpec(kind, columns, rows), wide=wide)
    picture = timeline(data)
    if picture:
        months = f"timeline {data['from'][:7]} … {data['to'][:7]}"
        print_spec(TableSpec(months, [Column("item", "id"), Column("months", "value")], picture, LEGEND), wide=wide)
    if data["balances"]:
        rows = [[b["at"], b["currency"], b["available"], b["open_advance"], b["balance"]] for b in data["balances"]]
        columns = [
            Column("after booking at", "time"),
            Column("currency"),
            Column("available", "number"),
            Column("advance", "number"),
            Column("balance", "number"),
        ]
        print_spec(TableSpec("credit balance", columns, rows), wide=wide)


def _credits(row: dict[str, Any]) -> str:
    return ", ".join(f"{a['grant_id'] or 'advance'} {a['amount']}" for a in row["allocations"]) or "-"


def _month_index(text: str) -> int:
    return int(text[:4]) * 12 + int(text[5:7]) - 1


def timeline(data: dict[str, Any]) -> list[list[str]]:
    """One row per item (identity up to its version), its periods as characters across the months."""
    first, last = _month_index(data["from"]), _month_index(data["to"])
    last = min(last, first + MAX_MONTHS - 1)
    prefix = f"{data['subscription_id']}/"
    bars: dict[str, list[str]] = {}
    for row in [*data["lines"], *data["charges"]]:
        if row["change"] == "deleted" or row["unique_reference_id"] is None:
            continue
        key = row["unique_reference_id"].removeprefix(prefix).split("/period[")[0]
        bar = bars.setdefault(key, ["·"] * (last - first + 1))
        mark = "~" if row.get("type", row.get("price_type")) not in ("flat", "flat_fee") else "-"
        if mark == "-" and row.get("payment_term", "in_advance") != "in_arrears":
            mark = "="
        start, end = row["service_period"]["from"], row["service_period"]["to"]
        lo, hi = _month_index(start), _month_index(end)
        if end[8:] == "01T00:00:00Z" and hi > lo:
            hi -= 1  # a period ending at a month's first instant does not reach into that month
        for m in range(max(lo, first), min(hi, last) + 1):
            bar[m - first] = mark
    return [[key, "".join(bar)] for key, bar in sorted(bars.items())]
