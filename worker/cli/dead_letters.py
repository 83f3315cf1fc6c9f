"""`subsync dead-letters`: list, retry and delete the dead letters of subscription-sync
(docs/operations.md §5 "Dead letters")."""

import json
from typing import Annotated, Any

import typer

from worker.cli.output import Column, FormatOption, Id, WideOption, emit, print_table
from worker.cli.runtime import get_runtime
from worker.errors import InvalidInputError

app = typer.Typer(help="The dead-letter queue of subscription-sync.", no_args_is_help=True)


def _log() -> Any:
    from worker.infra.logging import get_logger  # lazy: structlog, loaded when a command runs

    return get_logger("worker.cli")


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@app.command("list")
def dead_letters_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="At most this many, newest first.")] = 100,
    fmt: FormatOption = None,
    wide: WideOption = False,
) -> None:
    """List dead-lettered messages with their reason and error, newest first (the table prints each id's
    shortest unique prefix, which `retry` and `delete` accept, and summarises each event and error;
    --wide or --format json print them whole)."""
    # lazy: the dead-letter queue is read through Dramatiq's Redis broker
    from worker.contract.events import QUEUE_NAME
    from worker.queue.dead_letters import list_dead_letters, short_ids

    letters = [letter.to_json() for letter in list_dead_letters(get_runtime(ctx).broker(), limit=limit)]
    shown = {d["id"]: d["id"] for d in letters} if wide else short_ids([d["id"] for d in letters])
    columns = [
        # an id `retry` accepts: like a time, this column is never shortened nor wraps (an `Id` cell is printed as is)
        Column("id", "time"),
        Column("dead-lettered at", "time"),
        Column("reason"),
        Column("event", "long"),
        Column("error", "long"),
    ]
    rows = [
        [Id(shown[d["id"]]), d["dead_lettered_at"], _reason(d), event_summary(d["event"]), d["error"] or ""]
        for d in letters
    ]
    emit(fmt, letters, table=lambda: print_table(f"dead letters of {QUEUE_NAME}", columns, rows, wide=wide))


def _reason(letter: dict[str, Any]) -> str:
    attempts = letter["attempts"]
    if attempts is None:
        return str(letter["reason"])
    return f"{letter['reason']} ({attempts} {'try' if attempts == 1 else 'tries'})"


def event_summary(event: Any) -> str:
    """One line for a dead letter's event: its type and what it is about (`subscription.created
    acme/sub_01`), else its compact JSON."""
    if isinstance(event, dict) and isinstance(event.get("type"), str):
        subject = event.get("subscription_id") or event.get("invoice_id") or ""
        namespace = event.get("namespace")
        about = f"{namespace}/{subject}" if namespace and subject else str(subject or namespace or "")
        as_of = f" as of {event['as_of']}" if event.get("as_of") else ""
        return f"{event['type']} {about}{as_of}".strip()
    if isinstance(event, dict) and set(event) == {"namespace"}:
        return f"reconcile_due {event['namespace']}"
    return _compact(event) if not isinstance(event, str) else event


DeadLetterIds = Annotated[
    list[str] | None,
    typer.Argument(metavar="[ID]...", help="Dead-letter ids, or unique prefixes of them (as `list` prints); or --all."),
]


def _chosen(ids: list[str] | None, all_: bool) -> list[str] | None:
    if bool(ids) == all_:
        raise InvalidInputError("give dead-letter ids or --all (not both)")
    return None if all_ else ids


@app.command("retry")
def dead_letters_retry(
    ctx: typer.Context,
    ids: DeadLetterIds = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter (instead of ids).")] = False,
    fmt: FormatOption = None,
    wide: WideOption = False,
) -> None:
    """Re-enqueue dead letters (by id, or --all) and remove them from the dead-letter queue."""
    chosen = _chosen(ids, all_)
    # lazy: the dead-letter queue is read through Dramatiq's Redis broker
    from worker.queue.dead_letters import retry_dead_letters

    replayed = retry_dead_letters(get_runtime(ctx).broker(), chosen)
    data = {"retried": [{"id": r.id, "message_id": r.message_id, "actor_name": r.actor_name} for r in replayed]}
    _log().info("dead letters replayed", count=len(replayed))
    columns = [Column("id", "id"), Column("message id", "id"), Column("actor")]
    rows = [[r.id, r.message_id or "-", r.actor_name or "- (re-enqueued as stored)"] for r in replayed]
    emit(fmt, data, table=lambda: print_table("replayed", columns, rows, wide=wide))


@app.command("delete")
def dead_letters_delete(
    ctx: typer.Context,
    ids: DeadLetterIds = None,
    all_: Annotated[bool, typer.Option("--all", help="Delete every dead letter (instead of ids).")] = False,
    fmt: FormatOption = None,
) -> None:
    """Delete dead letters for good (by id, or --all); an unknown id changes nothing (exit 1)."""
    chosen = _chosen(ids, all_)
    # lazy: the dead-letter queue is read through Dramatiq's Redis broker
    from worker.queue.dead_letters import delete_dead_letters

    deleted = delete_dead_letters(get_runtime(ctx).broker(), chosen)
    _log().info("dead letters deleted", count=len(deleted))
    emit(
        fmt,
        {"deleted": deleted},
        table=lambda: print_table("deleted", [Column("id", "id")], [[d] for d in deleted], wide=True),
    )
