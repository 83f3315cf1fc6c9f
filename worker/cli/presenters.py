"""JSON shapes of docs/contract.md §6 and the readable tables printed by default on a terminal.

Tables are `TableSpec`s printed by `worker.cli.output` (80 columns, ids never split; docs/contract.md §5):
ids go in `id` columns, times in `time` columns, long text in `long` columns."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from worker.cli.output import Column, Id, TableSpec
from worker.contract.text import format_decimal, format_optional_time, format_time

if TYPE_CHECKING:
    from worker.app.sync import SyncResult
    from worker.domain.charges import ChargePrintedPatch
    from worker.domain.timeutil import Period
    from worker.domain.updater import PrintedPatch


def period_json(start: datetime | None, end: datetime | None) -> dict[str, str | None]:
    """A period as docs/contract.md §6 prints it: `{"from", "to"}`."""
    return {"from": format_optional_time(start), "to": format_optional_time(end)}


def json_value(value: Any) -> Any:
    """Stored JSON as printed: decimals inside it as strings in shortest form."""
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_value(v) for v in value]
    if isinstance(value, Decimal):
        return format_decimal(value)
    return value


def line_json(row: Any) -> dict[str, Any]:
    group = None
    if row.split_line_group_id is not None:
        group = {
            "id": row.split_line_group_id,
            "unique_reference_id": row.group_unique_reference_id,
            "service_period": period_json(row.group_service_period_start, row.group_service_period_end),
            "deleted": row.group_deleted_at is not None,
        }
    subscription = None
    if row.subscription_id is not None:
        subscription = {
            "subscription_id": row.subscription_id,
            "phase_id": row.subscription_phase_id,
            "item_id": row.subscription_item_id,
            "billing_period": period_json(row.billing_period_start, row.billing_period_end),
        }
    return {
        "id": row.id,
        "invoice_id": row.invoice_id,
        "invoice_type": row.invoice_type,
        "invoice_status": row.invoice_status,
        "invoice_immutable": row.invoice_immutable,
        "managed_by": row.managed_by,
        "unique_reference_id": row.unique_reference_id,
        "split_line_group": group,
        "subscription": subscription,
        "service_period": period_json(row.service_period_start, row.service_period_end),
        "invoice_at": format_time(row.invoice_at),
        "currency": row.currency,
        "name": row.name,
        "feature_key": row.feature_key,
        "price": json_value(row.price),
        "discounts": json_value(row.discounts),
        "tax_config": row.tax_config,
        "annotations": row.annotations or {},
        "quantity": format_decimal(row.quantity) if row.quantity is not None else None,
        "deleted": row.deleted_at is not None,
        # docs/credits.md §2.4: the charge that owns the line and its amounts (null on every line sync writes)
        "charge_id": row.charge_id,
        **{k: _decimal_or_none(getattr(row, k)) for k in ("amount", "discounts_total", "credits_total", "total")},
    }


def _decimal_or_none(value: Any) -> str | None:
    return format_decimal(value) if value is not None else None


def _patch_period(period: Period) -> dict[str, str | None]:
    return period_json(period.start, period.end)


def patch_json(patch: PrintedPatch | ChargePrintedPatch) -> dict[str, Any]:
    # lazy: the charge domain, loaded only when a sync result is printed (not for --help)
    from worker.domain.charges import ChargePrintedPatch

    out: dict[str, Any] = {
        "op": patch.op,
        "unique_reference_id": patch.unique_reference_id,
        "line_id": patch.line_id,
        "invoice_id": patch.invoice_id,
        "service_period": _patch_period(patch.service_period),
        "reason": patch.reason,
    }
    if patch.op in ("group_update", "group_delete"):
        out["line_id"] = None
        out["invoice_id"] = None
        out["group_id"] = patch.group_id
    if isinstance(patch, ChargePrintedPatch):  # docs/credits.md §2.6
        out["charge_id"] = patch.charge_id
    return out


def sync_result_json(result: SyncResult) -> dict[str, Any]:
    return {
        "namespace": result.namespace,
        "subscription_id": result.subscription_id,
        "as_of": format_time(result.as_of),
        "dry_run": result.dry_run,
        "patches": [patch_json(p) for p in result.patches],
        "has_billables": result.state.has_billables,
        "next_sync_after": format_optional_time(result.state.next_sync_after),
    }


def _short_time(value: datetime | None) -> str:
    if value is None:
        return "-"
    text = format_time(value.replace(microsecond=0))  # tables print times to the second
    return text.removesuffix("T00:00:00Z")


def _price_text(price: Any) -> str:
    if not price:
        return "-"
    if price.get("type") == "flat":
        arrears = price.get("payment_term") == "in_arrears"
        return f"flat {price.get('amount')}" + (" arrears" if arrears else "")
    if "amount" in price:
        return f"{price['type']} {price['amount']}"
    return str(price.get("type"))


def patches_table(result: SyncResult) -> TableSpec:
    title = (
        f"sync {result.namespace}/{result.subscription_id} as of {format_time(result.as_of)}"
        f"{' (dry run)' if result.dry_run else ''}: {len(result.patches)} patch(es)"
    )
    columns = [
        Column("op"),
        Column("reason"),
        Column("unique reference id", "id"),
        Column("service period"),
        Column("line", "id"),
        Column("invoice", "id"),
    ]
    rows = [
        [
            p.op,
            p.reason,
            p.unique_reference_id,
            f"{_short_time(p.service_period.start)} → {_short_time(p.service_period.end)}",
            p.line_id or p.group_id or "-",
            p.invoice_id or "-",
        ]
        for p in result.patches
    ]
    caption = (
        f"has_billables={str(result.state.has_billables).lower()} "
        f"next_sync_after={format_optional_time(result.state.next_sync_after) or '-'}"
    )
    return TableSpec(title, columns, rows, caption)


def lines_table(rows: Sequence[Any], title: str) -> TableSpec:
    """Plain lines in order; the children of a split line group follow a row for their group.

    Compact enough for an 80-column terminal: identities never wrap (their shared subscription prefix is
    said once in the title, their middle is elided when room is short); how a line is managed and
    whether it is deleted are noted after its identity."""
    columns = [
        Column("line", "id"),
        Column("service period", "text"),  # wraps after the arrow on narrow terminals
        Column("invoice at", "time"),
        Column("price", "number"),
        Column("invoice"),
    ]
    subscriptions = {r.subscription_id for r in rows}
    prefix = f"{next(iter(subscriptions))}/" if len(subscriptions) == 1 and None not in subscriptions else ""
    if prefix:  # one subscription: its id heads every identity, say it once in the title
        title = f"{title} — identities below are under {prefix}"
    out: list[list[Any]] = []
    for kind, item in _with_groups(rows):
        if kind == "group":
            notes = " (deleted)" if item.group_deleted_at is not None else ""
            out.append(
                [
                    Id(
                        _strip(item.group_unique_reference_id, prefix) or item.split_line_group_id,
                        after=f" (split){notes}",
                        bold=True,
                    ),
                    f"{_short_time(item.group_service_period_start)} → {_short_time(item.group_service_period_end)}",
                    "",
                    _price_text(item.price),
                    "",
                ]
            )
            continue
        before, after = "", ""
        name = _strip(item.unique_reference_id, prefix) or item.id
        if item.split_line_group_id is not None:
            before, name = "└ ", item.id
        if item.managed_by != "subscription":
            after += f" ({item.managed_by})"
        if item.deleted_at is not None:
            after += " (deleted)"
        out.append(
            [
                Id(name, before, after),
                f"{_short_time(item.service_period_start)} → {_short_time(item.service_period_end)}",
                _short_time(item.invoice_at),
                _price_text(item.price),
                item.invoice_status,  # gathering, draft, issued, ... (a gathering invoice has status gathering)
            ]
        )
    return TableSpec(title, columns, out)


def _strip(identity: str | None, prefix: str) -> str | None:
    return identity.removeprefix(prefix) if identity is not None else None


def _with_groups(rows: Iterable[Any]) -> list[tuple[str, Any]]:
    """Rows in order, each group's children gathered under one group row placed at its first child."""
    out: list[tuple[str, Any]] = []
    children: dict[str, list[Any]] = {}
    for row in rows:
        gid = row.split_line_group_id
        if gid is None:
            out.append(("line", row))
        elif gid not in children:
            children[gid] = [row]
            out.append(("group", row))
        else:
            children[gid].append(row)
    expanded: list[tuple[str, Any]] = []
    for kind, row in out:
        expanded.append((kind, row))
        if kind == "group":
            expanded += [("line", c) for c in children[row.split_line_group_id]]
    return expanded


def created_invoices_json(created: Sequence[Any]) -> dict[str, Any]:
    """`subsync invoice --format json` (docs/contract.md §6)."""
    return {
        "invoices": [
            {"id": c.id, "currency": c.currency, "status": c.status, "line_ids": list(c.line_ids)} for c in created
        ]
    }


def created_invoices_table(created: Sequence[Any], title: str) -> TableSpec:
    columns = [Column("invoice", "id"), Column("currency"), Column("status"), Column("lines", "number")]
    return TableSpec(title, columns, [[c.id, c.currency, c.status, len(c.line_ids)] for c in created])


def _issue_json(issue: Any) -> dict[str, Any]:
    return {
        "severity": issue.severity,
        "code": issue.code,
        "component": issue.component,
        "message": issue.message,
        "path": issue.path,
    }


def invoice_json(row: Any, issues: Sequence[Any]) -> dict[str, Any]:
    """One entry of `subsync invoices list --format json` (docs/contract.md §6)."""
    return {
        "id": row.id,
        "type": row.type,
        "status": row.status,
        "immutable": row.immutable,
        "currency": row.currency,
        "number": row.number,
        "created_at": format_time(row.created_at),
        "deleted": row.deleted_at is not None,
        "validation_issues": [_issue_json(i) for i in issues],
    }


def invoices_table(entries: Sequence[tuple[Any, Sequence[Any]]], title: str) -> TableSpec:
    columns = [
        Column("invoice", "id"),
        Column("type"),
        Column("status"),
        Column("currency"),
        Column("number", "id"),
        Column("created", "time"),
        Column("issues"),
    ]
    rows = []
    for row, issues in entries:
        status = row.status + (" (deleted)" if row.deleted_at is not None else "")
        issue_text = "\n".join(f"{i.severity}: {i.message} ({i.path})" for i in issues) or "-"
        rows.append([row.id, row.type, status, row.currency, row.number or "-", row.created_at, issue_text])
    return TableSpec(title, columns, rows)
