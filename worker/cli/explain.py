"""`subsync explain line|charge`: why a stored line or charge is there, with this period and amount
(docs/sync.md "Explaining a line"). JSON: the documented shape plus the stored row (`stored_row`) as
`subsync lines` / `subsync charges list` print it; a table: the derivation in words, step by step."""

from datetime import datetime
from typing import Annotated, Any

import typer

from worker.cli.options import IdOption, NamespaceOption, timestamp_option
from worker.cli.output import Column, FormatOption, WideOption, emit, print_table
from worker.cli.runtime import get_runtime

app = typer.Typer(help="Explain a line or a charge: its derivation, step by step.", no_args_is_help=True)

AsOfOption = Annotated[
    datetime | None,
    timestamp_option("--as-of", help="Compare with the target of a sync at this time (RFC 3339; default: now)."),
]


def _print(data: dict[str, Any], *, wide: bool) -> None:
    from worker.domain.explain import steps  # lazy: the domain is imported when the command runs

    title = f"{data['kind']} {data['id']}: {data['status']}"
    rows = [[str(n), text] for n, text in enumerate(steps(data), 1)]
    print_table(title, [Column("#", "number"), Column("step")], rows, wide=wide)


@app.command("line")
def explain_line(
    ctx: typer.Context,
    namespace: NamespaceOption,
    line_id: IdOption,
    as_of: AsOfOption = None,
    fmt: FormatOption = None,
    wide: WideOption = False,
) -> None:
    """Explain an invoice line: subscription, phase, item version, periods, invoice_at, proration, invoice."""
    # lazy: the use case imports SQLAlchemy
    from worker.app.explain import explain_line_of
    from worker.cli.presenters import line_json

    explained = explain_line_of(get_runtime(ctx).engine(), namespace, line_id, as_of=as_of)
    data = {**explained.data, "stored_row": line_json(explained.row)}
    emit(fmt, data, table=lambda: _print(data, wide=wide))


@app.command("charge")
def explain_charge(
    ctx: typer.Context,
    namespace: NamespaceOption,
    charge_id: IdOption,
    as_of: AsOfOption = None,
    fmt: FormatOption = None,
    wide: WideOption = False,
) -> None:
    """Explain a charge: its derivation, state, runs and allocation rows per grant."""
    # lazy: the use case imports SQLAlchemy
    from worker.app.explain import explain_charge_of
    from worker.cli.charges import charge_json

    explained = explain_charge_of(get_runtime(ctx).engine(), namespace, charge_id, as_of=as_of)
    data = {**explained.data, "stored_row": charge_json(explained.row)}

    def table() -> None:
        _print(data, wide=wide)
        runs = data["stored_row"]["runs"]
        rows = [
            [
                run["id"],
                run["amount"],
                run["credits_total"],
                run["total"],
                run["invoice_id"] or "",
                a["grant_id"] or "",
                a["kind"],
                a["amount"],
            ]
            for run in runs
            for a in (run["allocations"] or [{"grant_id": None, "kind": "", "amount": ""}])
        ]
        if rows:
            columns = [
                Column("run", "id"),
                Column("amount", "number"),
                Column("credits", "number"),
                Column("total", "number"),
                Column("invoice", "id"),
                Column("grant", "id"),
                Column("allocation"),
                Column("alloc.", "number"),
            ]
            print_table("runs and allocation rows", columns, rows, wide=wide)

    emit(fmt, data, table=table)
