"""Queue commands of the `subsync` CLI: worker, scheduler, publish, status, dead-letters.

`register(app)` adds them to the root app.
"""

import json
import logging
import os
import re
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from worker.cli import dead_letters
from worker.cli.options import EventType, NamespaceOption, finite_seconds, identifier_callback, timestamp_option
from worker.cli.output import Column, FormatOption, emit, print_record, print_table
from worker.cli.runtime import Runtime, get_runtime
from worker.errors import SubsyncError

#: The queue of every message (`worker.contract.events.QUEUE_NAME`; a test keeps them equal).
QUEUE_NAME = "subscription-sync"
#: Longest scheduler interval: a week (a longer one is a typo, and `inf` never ticks).
MAX_INTERVAL_SECONDS = 7 * 86400.0
MAX_STUCK_AFTER_SECONDS = 365 * 86400.0


def _log() -> Any:
    from worker.infra.logging import get_logger  # lazy: structlog, loaded when a command runs

    return get_logger("worker.cli")


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
    runtime: Runtime, processes: int, threads: int, metrics_port: int | None, metrics_host: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """The `dramatiq` command line and environment that `subsync worker` executes."""

    settings = runtime.settings
    env = dict(os.environ)  # the exec'd process inherits this environment (not a setting read here)
    env["DATABASE_URL"] = runtime.database_url()
    env["REDIS_URL"] = runtime.broker_url()
    env["SUBSYNC_LOG_FORMAT"] = runtime.settings.effective_log_format
    env["SUBSYNC_LOG_LEVEL"] = logging.getLevelName(runtime.log_level)  # info unless -vv or SUBSYNC_LOG_LEVEL
    env["SUBSYNC_WORKER_THREADS"] = str(threads)
    port = settings.metrics_port if metrics_port is None else metrics_port
    host = settings.metrics_host if metrics_host is None else metrics_host
    env["SUBSYNC_METRICS_PORT"] = str(port)
    env["SUBSYNC_METRICS_HOST"] = host
    if port > 0:
        directory = str(_metrics_dir(settings.metrics_dir, port))
        env.update(
            {
                "SUBSYNC_METRICS_DIR": directory,
                "PROMETHEUS_MULTIPROC_DIR": directory,
                "dramatiq_prom_db": directory,
                "dramatiq_prom_port": str(port),
                "dramatiq_prom_host": host,
            }
        )
    else:
        env.pop("SUBSYNC_METRICS_DIR", None)
    shutdown_ms = int((settings.shutdown_grace_seconds + 15) * 1000)
    argv = [
        sys.executable,
        "-m",
        "worker.process",  # Dramatiq's supervisor, logging like the rest (worker/process.py)
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


def _host_callback(value: str | None) -> str | None:
    """An IP address or a host name to bind to (bad input: exit 2, naming the option)."""
    if value is None:
        return None
    import ipaddress  # lazy: only when the option is given

    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    labels = value.rstrip(".").split(".")
    plausible = value and len(value) <= 253 and not labels[-1].isdigit()  # `1.2.3.999` is a bad address
    if plausible and all(_HOST_LABEL.fullmatch(label) for label in labels):
        return value
    raise typer.BadParameter(f"{value!r} is not an IP address or host name", param_hint="--metrics-host")


_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _require_schema_at_head(runtime: Runtime) -> None:
    """A worker on a schema behind (or ahead of) this release would take messages from the shared
    queue and fail them: refuse to start (docs/operations.md §2)."""
    # lazy: Alembic costs ~0.2 s of start-up, paid by the commands that check the schema
    from worker.store.migrations import schema_state

    problem = schema_state(runtime.database_url()).problem()
    if problem is None:
        return
    if "run `subsync db upgrade`" not in problem:
        problem += "; run `subsync db upgrade` of that release, or deploy it"
    raise SubsyncError(f"the worker will not start: {problem}")


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
    metrics_host: Annotated[
        str | None,
        typer.Option(
            "--metrics-host",
            metavar="ADDRESS",
            help="Address the metrics and health endpoints listen on (default SUBSYNC_METRICS_HOST or 0.0.0.0).",
            callback=_host_callback,
        ),
    ] = None,
) -> None:
    """Run the Dramatiq worker on queue subscription-sync (execs Dramatiq's supervisor, `worker.process`).
    Refuses to start (exit 1) unless the database schema is at this release's head."""
    runtime = get_runtime(ctx, long_running=True)
    argv, env = worker_command(runtime, processes, threads, metrics_port, metrics_host)
    _require_schema_at_head(runtime)
    _log().info(
        "starting worker",
        queue=QUEUE_NAME,
        processes=processes,
        threads=threads,
        metrics_port=int(env["SUBSYNC_METRICS_PORT"]) or None,
        metrics_host=env["SUBSYNC_METRICS_HOST"] if int(env["SUBSYNC_METRICS_PORT"]) else None,
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
        float,
        typer.Option(
            "--interval",
            metavar="SECONDS",
            help=f"Seconds between reconcile_due messages (0.1 to {MAX_INTERVAL_SECONDS:g}).",
            callback=finite_seconds(0.1, MAX_INTERVAL_SECONDS),
        ),
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
    # lazy: the scheduler imports Dramatiq
    from worker.queue.scheduler import Scheduler

    runtime = get_runtime(ctx, long_running=True)
    broker = runtime.broker()
    log = _log()
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
    event_type: Annotated[EventType, typer.Argument(metavar="TYPE", help="Event type (docs/contract.md §4).")],
    namespace: NamespaceOption,
    subscription_id: Annotated[
        str | None,
        typer.Option(
            "--subscription",
            metavar="ID",
            help="The subscription (subscription.* events; give --subscription or --invoice).",
            callback=identifier_callback,
        ),
    ] = None,
    invoice_id: Annotated[
        str | None,
        typer.Option(
            "--invoice",
            metavar="ID",
            help="The invoice (invoice.created; give --subscription or --invoice).",
            callback=identifier_callback,
        ),
    ] = None,
    as_of: Annotated[datetime | None, timestamp_option("--as-of", help="Sync horizon override (RFC 3339).")] = None,
    event_id: Annotated[
        str | None, typer.Option("--event-id", metavar="ID", help="Producer's event id (default: generated).")
    ] = None,
    fmt: FormatOption = None,
) -> None:
    """Enqueue one event on subscription-sync."""
    # lazy: the event models import pydantic, publishing imports Dramatiq
    from worker.contract.events import make_event
    from worker.queue.publish import publish

    event = make_event(  # an InvalidEvent is bad input: exit 2
        event_type.value,
        namespace=namespace,
        subscription_id=subscription_id,
        invoice_id=invoice_id,
        as_of=as_of,
        event_id=event_id,
    )
    broker = get_runtime(ctx).broker()
    message_id = publish(event, broker=broker)
    data = {"message_id": message_id, "queue": QUEUE_NAME, "actor": event.actor_name, "event": event.payload()}
    _log().info("event published", message_id=message_id, event_type=event.type, event_id=event.event_id)
    record = {"message id": message_id, "actor": event.actor_name, "event": _compact(event.payload())}
    emit(fmt, data, table=lambda: print_record("published", record))


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
            callback=finite_seconds(0, MAX_STUCK_AFTER_SECONDS),  # not inf, nan or 1e400 (exit 2)
            help="A message in flight for longer since it was queued is stuck "
            "(default: the time limit plus the max backoff).",
        ),
    ] = None,
    fmt: FormatOption = None,
) -> None:
    """Queue depth, dead letters, stuck messages, and the oldest overdue next_sync_after."""
    # lazy: the status reads Redis (Dramatiq) and the database (SQLAlchemy)
    from worker.queue.status import StuckLimits, status

    runtime = get_runtime(ctx)
    limits = StuckLimits.from_settings(runtime.settings, stuck_after)
    data = status(runtime.engine(), runtime.broker(), namespace=namespace, limits=limits)

    def table() -> None:
        summary = {
            _STATUS_LABELS.get(k, k.replace("_", " ")): "-" if v is None else v
            for k, v in data.items()
            if k != "stuck_messages"
        }
        print_record("subsync status", summary)
        if data["stuck_messages"]:
            keys = ["id", "queue", "why", "worker", "message_id", "actor_name", "queued_at", "eta"]
            columns = [
                Column("id", "id"), Column("queue"), Column("why"), Column("worker", "id"), Column("message id", "id"),
                Column("actor"), Column("queued at", "time"), Column("eta", "time"),
            ]  # fmt: skip
            rows = [
                [
                    f"{_STUCK_WHY[m['why']]} ({m['why']})" if c == "why" and m["why"] in _STUCK_WHY else m[c] or "-"
                    for c in keys
                ]
                for m in data["stuck_messages"]
            ]
            print_table("stuck messages", columns, rows)

    emit(fmt, data, table=table)


#: How `status` labels its fields in the table (`--format json` keeps the keys: docs/operations.md §5).
_STATUS_LABELS = {
    "queue": "queue",
    "broker_namespace": "broker namespace",
    "ready": "ready messages",
    "in_progress": "in progress",
    "delayed": "delayed (retry backoff)",
    "dead_letters": "dead letters",
    "namespace": "tenant namespace",
    "due_subscriptions": "subscriptions due",
    "never_synced_subscriptions": "never synced",
    "oldest_overdue_next_sync_after": "oldest overdue sync",
    "overdue_seconds": "overdue (s)",
    "stuck": "stuck messages",
    "in_progress_dead_worker": "stuck: worker gone",
    "in_progress_too_long": "stuck: running too long",
    "unowned": "stuck: unowned",
    "delayed_beyond_max_backoff": "stuck: delayed too far",
    "stuck_after_seconds": "stuck after (s)",
}
_STUCK_WHY = {
    "in_progress_dead_worker": "worker gone",
    "in_progress_too_long": "running too long",
    "unowned": "unowned",
    "delayed_beyond_max_backoff": "delayed too far",
}


def register(app: typer.Typer) -> None:
    """Add the queue commands to the root `subsync` app."""
    app.command("worker")(worker)
    app.command("scheduler")(scheduler)
    app.command("publish")(publish_command)
    app.command("status")(status_command)
    app.add_typer(dead_letters.app, name="dead-letters")
