"""`subsync explain line|charge`: why a stored line or charge is there, with this period and amount
(docs/sync.md §10.1). JSON: the documented shape plus the stored row (`stored_row`) as
`subsync lines` / `subsync charges list` print it; a table: the derivation in words, step by step."""

from collections.abc import Mapping, Sequence
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
                Column("invoice", "id"),
                Column("grant", "id"),
                Column("kind", "value"),
                Column("alloc", "number"),
            ]
            print_table("runs and allocation rows", columns, rows, wide=wide)

    emit(fmt, data, table=table)


def steps(explained: Mapping[str, Any]) -> Sequence[str]:
    """The explanation in words, one step per line (the table output)."""
    d = explained.get("derivation")
    out: list[str] = []
    if d is not None:
        sub, ph, it, per = d["subscription"], d["phase"], d["item"], d["period"]
        out.append(
            f"subscription {sub['id']} ({sub['currency']}, every {sub['billing_cadence']} from "
            f"{sub['billing_anchor']}, {sub['active_from']} → {sub['active_to'] or '∞'})"
        )
        out.append(f"phase {ph['key']!r} #{ph['position']} [{ph['start']} → {ph['end'] or '∞'})")
        out.append(
            f"item {it['key']!r} version v[{it['version']}] ({it['id']}), window "
            f"[{it['window']['from']} → {it['window']['to'] or '∞'})"
        )
        price = d["rate_card"]["price"] or {}
        out.append(f"rate card {d['rate_card']['name']!r}: {price.get('type')} {price.get('amount', '')}".rstrip())
        out.append(per["text"])
        out.extend(f"  {c['text']}" for c in per["clamps"])
        sp, bp = per["service_period"], per["billing_period"]
        out.append(f"service period [{sp['from']}, {sp['to']}), billing period [{bp['from']}, {bp['to']})")
        out.append(f"invoice_at {d['invoice_at']['value']}: {d['invoice_at']['text']}")
        hz = d["horizon"]
        within = "within" if hz["within"] else "beyond"
        out.append(f"horizon of a sync at {hz['as_of']}: {hz['limit']} — this period is {within} it")
        pr = d["proration"]
        if pr.get("applies"):
            out.append(
                f"proration: {pr['reason']}, ratio {pr['ratio']} × {pr['price_amount']} = {pr['amount']} "
                f"({pr['rounding']})"
            )
        else:
            amount = f" → {pr['amount']}" if "amount" in pr else ""
            out.append(f"no proration: {pr['reason']}{amount}")
        discounts = {k: v for k, v in (d["discounts"] or {}).items() if v is not None}
        if discounts:
            out.append(f"discounts: {discounts} (applied when invoiced, docs/credits.md §3.5)")
    if "invoice" in explained:
        inv = explained["invoice"]
        out.append(f"on invoice {inv['id']}: {inv['why']}")
        out.extend(f"  issue ({i['severity']}): {i['message']}" for i in inv.get("issues", []))
    if explained.get("split_group"):
        g = explained["split_group"]
        out.append(f"split group {g['id']}: {g['why']}; siblings {', '.join(g['siblings']) or 'none'}")
    if "state" in explained:
        out.append(f"state {explained['state']['status']}: {explained['state']['why']}")
    out.append(f"{explained['status']}" + (f": {explained['reason']}" if explained["reason"] else ""))
    for diff in explained["differences"]:
        out.append(f"  {diff['field']}: stored {diff['stored']}, target {diff['target']}")
    out.append(f"sync: {explained['sync']}")
    return out
