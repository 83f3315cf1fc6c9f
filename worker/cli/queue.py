"""Queue commands of the `subsync` CLI: worker, scheduler, publish, status, dead-letters.

`register(app)` adds them to the root app.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from worker.cli.options import NamespaceOption, identifier_callback, timestamp_option
from worker.cli.output import FormatOption, emit, print_table
from worker.cli.runtime import Runtime, get_runtime
from worker.contract.events import EVENT_TYPES, QUEUE_NAME, make_event
from worker.errors import InvalidInputError
from worker.infra.logging import get_logger
from worker.queue.dead_letters import list_dead_letters, retry_dead_letters
from worker.queue.publish import publish
from worker.queue.scheduler import Scheduler
from worker.queue.status import StuckLimits, status

log = get_logger("worker.cli")

dead_letters_app = typer.Typer(help="The dead-letter queue of subscription-sync.", no_args_is_help=True)


# --- worker ------------------------------------------------------------------------------------


def _metrics_dir(configured: Path | None, port: int) -> Path:
    """prometheus_client's multiprocess directory, emptied for this run (metrics files, and the
    liveness reports in `health/`): `SUBSYNC_METRICS_DIR` when set, else one per port in the temp
    directory."""
    if configured is not None:
        directory = configured
    else:
        directory = Path(tempfile.gettempdir()) / f"subsync-metrics-{os.getuid()}-{port}"
    if directory.exists():
        for stale in [*directory.glob("*.db"), *directory.glob("health/*.json")]:
            stale.unlink(missing_ok=True)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory


def worker_command(
    runtime: Runtime, processes: int, threads: int, metrics_port: int | None
) -> tuple[list[str], dict[str, str]]:
    """The `dramatiq` command line and environment that `subsync worker` executes."""

    settings = runtime.settings
    env = dict(os.environ)  # the exec'd process inherits this environment (not a setting read here)
    env["DATABASE_URL"] = runtime.database_url()
    env["REDIS_URL"] = runtime.broker_url()
    env["SUBSYNC_LOG_FORMAT"] = runtime.settings.effective_log_format
    env["SUBSYNC_WORKER_THREADS"] = str(threads)
    port = settings.metrics_port if metrics_port is None else metrics_port
    env["SUBSYNC_METRICS_PORT"] = str(port)
    if port > 0:
        directory = str(_metrics_dir(settings.metrics_dir, port))
        env.update(
            {
                "SUBSYNC_METRICS_DIR": directory,
                "PROMETHEUS_MULTIPROC_DIR": directory,
                "dramatiq_prom_db": directory,
                "dramatiq_prom_port": str(port),
                "dramatiq_prom_host": settings.metrics_host,
            }
        )
    else:
        env.pop("SUBSYNC_METRICS_DIR", None)
    shutdown_ms = int((settings.shutdown_grace_seconds + 15) * 1000)
    argv = [
        sys.executable,
        "-m",
        "dramatiq",
        "worker.process:main",
        "--processes",
        str(processes),
        "--threads",
        str(threads),
        "--queues",
        QUEUE_NAME,
        "--skip-logging",
        "--worker-shutdown-timeout",
        str(shutdown_ms),
    ]
    return argv, env


def worker(
    ctx: typer.Context,
    processes: Annotated[int, typer.Option("--processes", min=1, max=256, help="Worker processes.")] = 1,
    threads: Annotated[int, typer.Option("--threads", min=1, max=1024, help="Threads per process.")] = 4,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=0,
            max=65535,
            help="Prometheus port (default SUBSYNC_METRICS_PORT or 9191; 0 disables metrics).",
        ),
    ] = None,
) -> None:
    """Run the Dramatiq worker on queue subscription-sync (execs `dramatiq worker.process:main`)."""
    runtime = get_runtime(ctx)
    argv, env = worker_command(runtime, processes, threads, metrics_port)
    log.info(
        "starting worker",
        queue=QUEUE_NAME,
        processes=processes,
        threads=threads,
        metrics_port=int(env["SUBSYNC_METRICS_PORT"]) or None,
        **runtime.describe(),
    )
    runtime.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(argv[0], argv, env)


# --- scheduler ---------------------------------------------------------------------------------


def scheduler(
    ctx: typer.Context,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, metavar="SECONDS", help="Seconds between reconcile_due messages.")
    ] = 60.0,
    health_file: Annotated[
        Path | None,
        typer.Option(
            "--health-file",
            metavar="PATH",
            help="Rewrite this file after every tick that reached Redis (its age is the scheduler's health).",
        ),
    ] = None,
) -> None:
    """Every interval, enqueue reconcile_due (safe to run several: one enqueues per tick)."""

    runtime = get_runtime(ctx)
    broker = runtime.broker()
    log.info(
        "scheduler started",
        interval=interval,
        queue=QUEUE_NAME,
        health_file=str(health_file) if health_file else None,
        **runtime.describe(),
    )
    enqueued = Scheduler(broker, interval, health_file=health_file).run_forever()
    log.info("scheduler stopped", enqueued=enqueued)


# --- publish -----------------------------------------------------------------------------------


def publish_command(
    ctx: typer.Context,
    event_type: Annotated[str, typer.Argument(metavar="TYPE", help=f"Event type: {', '.join(EVENT_TYPES)}.")],
    namespace: NamespaceOption,
    subscription_id: Annotated[
        str | None, typer.Option("--subscription", metavar="ID", callback=identifier_callback)
    ] = None,
    invoice_id: Annotated[str | None, typer.Option("--invoice", metavar="ID", callback=identifier_callback)] = None,
    as_of: Annotated[datetime | None, timestamp_option("--as-of", help="Sync horizon override (RFC 3339).")] = None,
    event_id: Annotated[
        str | None, typer.Option("--event-id", metavar="ID", help="Producer's event id (default: generated).")
    ] = None,
    fmt: FormatOption = None,
) -> None:
    """Enqueue one event on subscription-sync."""
    event = make_event(  # an InvalidEvent is bad input: exit 2
        event_type,
        namespace=namespace,
        subscription_id=subscription_id,
        invoice_id=invoice_id,
        as_of=as_of,
        event_id=event_id,
    )
    broker = get_runtime(ctx).broker()
    message_id = publish(event, broker=broker)
    data = {"message_id": message_id, "queue": QUEUE_NAME, "actor": event.actor_name, "event": event.payload()}
    log.info("event published", message_id=message_id, event_type=event.type, event_id=event.event_id)
    emit(
        fmt,
        data,
        table=lambda: print_table(
            "published", ["message id", "actor", "event"], [[message_id, event.actor_name, _compact(event.payload())]]
        ),
    )


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- status ------------------------------------------------------------------------------------


def status_command(
    ctx: typer.Context,
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace", metavar="NS", help="Only this tenant's subscriptions.", callback=identifier_callback
        ),
    ] = None,
    stuck_after: Annotated[
        float | None,
        typer.Option(
            "--stuck-after",
            metavar="SECONDS",
            min=0,
            help="A message in flight for longer since it was queued is stuck "
            "(default: the time limit plus the max backoff).",
        ),
    ] = None,
    fmt: FormatOption = None,
) -> None:
    """Queue depth, dead letters, stuck messages, and the oldest overdue next_sync_after."""

    runtime = get_runtime(ctx)
    limits = StuckLimits.from_settings(runtime.settings, stuck_after)
    data = status(runtime.engine(), runtime.broker(), namespace=namespace, limits=limits)

    def table() -> None:
        print_table("subsync status", ["", "value"], [[k, v] for k, v in data.items() if k != "stuck_messages"])
        if data["stuck_messages"]:
            columns = ["id", "queue", "why", "worker", "message_id", "actor_name", "queued_at", "eta"]
            print_table("stuck messages", columns, [[m[c] or "-" for c in columns] for m in data["stuck_messages"]])

    emit(fmt, data, table=table)


# --- dead letters ------------------------------------------------------------------------------


def dead_letters_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="At most this many, newest first.")] = 100,
    fmt: FormatOption = None,
) -> None:
    """List dead-lettered messages with their reason, newest first."""

    letters = [letter.to_json() for letter in list_dead_letters(get_runtime(ctx).broker(), limit=limit)]
    emit(
        fmt,
        letters,
        table=lambda: print_table(
            f"dead letters of {QUEUE_NAME}",
            ["id", "dead-lettered at", "actor", "reason", "error", "attempts", "event"],
            [
                [
                    d["id"],
                    d["dead_lettered_at"],
                    d["actor_name"],
                    d["reason"],
                    d["error"],
                    d["attempts"],
                    _compact(d["event"]),
                ]
                for d in letters
            ],
        ),
    )


def dead_letters_retry(
    ctx: typer.Context,
    ids: Annotated[list[str] | None, typer.Argument(metavar="[ID]...", help="Dead-letter ids (see list).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    fmt: FormatOption = None,
) -> None:
    """Re-enqueue dead letters (by id, or --all) and remove them from the dead-letter queue."""

    if bool(ids) == all_:
        raise InvalidInputError("give dead-letter ids or --all (not both)")
    replayed = retry_dead_letters(get_runtime(ctx).broker(), None if all_ else ids)
    data = {"retried": [{"id": r.id, "message_id": r.message_id, "actor_name": r.actor_name} for r in replayed]}
    log.info("dead letters replayed", count=len(replayed))
    emit(
        fmt,
        data,
        table=lambda: print_table(
            "replayed", ["id", "message id", "actor"], [[r.id, r.message_id, r.actor_name] for r in replayed]
        ),
    )


def register(app: typer.Typer) -> None:
    """Add the queue commands to the root `subsync` app."""
    app.command("worker")(worker)
    app.command("scheduler")(scheduler)
    app.command("publish")(publish_command)
    app.command("status")(status_command)
    dead_letters_app.command("list")(dead_letters_list)
    dead_letters_app.command("retry")(dead_letters_retry)
    app.add_typer(dead_letters_app, name="dead-letters")
