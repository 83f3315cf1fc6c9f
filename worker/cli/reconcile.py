"""`subsync reconcile`: run the due syncs now, in this process (docs/contract.md §5, docs/sync.md §8.4).

It does what the scheduler and a worker would do, with the same code: `handle_reconcile_due` lists the
due subscriptions (`worker.store.due`, page by page) and, instead of enqueuing one
`reconcile_subscription` message each, this process handles each request at once with
`handle_reconcile_subscription` (a sync as of now, no invoicing step). `--dry-run` plans each sync and
writes nothing."""

from typing import Annotated, Any

import typer

from worker.cli.options import identifier_callback
from worker.cli.output import Column, FormatOption, WideOption, emit, print_record, print_table
from worker.cli.progress import progress
from worker.cli.runtime import get_runtime
from worker.errors import SubsyncError


def register(app: typer.Typer) -> None:
    app.command("reconcile")(reconcile)


class ReconcileFailed(SubsyncError):
    """Some due syncs failed (the summary lists them); the others were done."""


def reconcile(
    ctx: typer.Context,
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace",
            metavar="NS",
            help="Only this tenant (default: every namespace).",
            callback=identifier_callback,
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan each due sync and print it; write nothing.")] = False,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", min=1, max=1_000_000_000, metavar="N", help="At most N subscriptions (default: all due)."
        ),
    ] = None,
    fmt: FormatOption = None,
    wide: WideOption = False,
) -> None:
    """Run the due syncs now, in this process, as the scheduler and a worker would (docs/sync.md §8.4)."""
    # lazy: the handlers import SQLAlchemy
    from worker.app.handlers import handle_reconcile_due, handle_reconcile_subscription
    from worker.app.sync import sync_subscription
    from worker.cli.errors import error_report
    from worker.contract.events import ReconcileRequest

    runtime = get_runtime(ctx)
    settings = runtime.settings
    engine = runtime.engine()
    requests: list[ReconcileRequest] = []
    handle_reconcile_due(engine, requests.extend, page_size=settings.reconcile_page_size, namespace=namespace)
    chosen = requests if limit is None else requests[:limit]
    entries: list[dict[str, Any]] = []
    totals: dict[str, int] = {}
    with progress("reconciling", len(chosen)) as advance:
        for request in chosen:
            entry: dict[str, Any] = {"namespace": request.namespace, "subscription_id": request.subscription_id}
            try:
                if dry_run:
                    result = sync_subscription(
                        engine,
                        request.namespace,
                        request.subscription_id,
                        dry_run=True,
                        max_target_lines=settings.max_target_lines,
                    )
                    counts = result.counts()
                else:
                    counts = handle_reconcile_subscription(
                        engine, request, max_target_lines=settings.max_target_lines, reuse=settings.reuse_decisions
                    ).counts()
            except Exception as exc:  # reported with the others; the next subscription still syncs
                entry["error"] = "; ".join(error_report(exc)[1])
            else:
                entry["patches"] = counts
                for op, n in counts.items():
                    totals[op] = totals.get(op, 0) + n
            entries.append(entry)
            advance(1)
    failed = [e for e in entries if "error" in e]
    data = {
        "namespace": namespace,
        "dry_run": dry_run,
        "due": len(requests),
        "reconciled": len(entries) - len(failed),
        "failed": len(failed),
        "patches": totals,
        "subscriptions": entries,
    }

    def table() -> None:
        summary = {k: v for k, v in data.items() if k not in ("subscriptions", "patches")}
        summary["namespace"] = namespace or "(all)"
        summary["patches"] = ", ".join(f"{op} {n}" for op, n in sorted(totals.items())) or "none"
        print_record("reconcile (dry run)" if dry_run else "reconcile", summary, wide=wide)
        if entries:
            rows = [
                [
                    f"{e['namespace']}/{e['subscription_id']}",
                    ", ".join(f"{op} {n}" for op, n in sorted(e.get("patches", {}).items())) or "-",
                    e.get("error", ""),
                ]
                for e in entries
            ]
            columns = [Column("subscription", "id"), Column("patches"), Column("error", "long")]
            print_table(None, columns, rows, wide=wide)

    emit(fmt, data, table=table)
    if failed:
        raise ReconcileFailed(f"{len(failed)} of {len(entries)} due sync(s) failed (see the report)")
