"""The root `subsync` group: logging, settings and the runtime of one invocation, and the groups."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from worker.cli import billing, charges, credits, customers, db, demo, queue, subscriptions
from worker.cli.errors import COMMAND_WORDS_KEY, SubsyncGroup, error_report, print_error_lines
from worker.cli.runtime import Runtime
from worker.config import load_settings
from worker.infra.logging import configure_logging

app = typer.Typer(
    name="subsync",
    cls=SubsyncGroup,
    help="Keep billing invoice lines in step with subscriptions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(db.app, name="db")
app.add_typer(customers.app, name="customers")
app.add_typer(subscriptions.app, name="subscriptions")
app.add_typer(charges.app, name="charges")
app.add_typer(credits.app, name="credits")
billing.register(app)
demo.register(app)
queue.register(app)


@app.callback()
def root(ctx: typer.Context) -> None:
    """Configure logging, read the settings and say which database and broker are used."""
    configure_logging("console" if sys.stderr.isatty() else "json")
    settings = load_settings()
    configure_logging(settings.effective_log_format, settings.log_level)
    runtime = Runtime(settings)
    ctx.obj = runtime
    ctx.call_on_close(runtime.close)
    runtime.announce(_command_path(ctx))


def _command_path(ctx: typer.Context) -> str:
    """`subscriptions get` for `subsync subscriptions get --namespace …` (for the log line)."""
    words = list(ctx.meta.get(COMMAND_WORDS_KEY, [])) or [ctx.invoked_subcommand or ""]
    return " ".join(words[:2] if words[0] in _GROUPS else words[:1])


_GROUPS = {"db", "customers", "subscriptions", "invoices", "dead-letters", "charges", "credits"}


def main() -> None:
    """Console-script entry point: usage errors become one `error:` line (exit 2)."""
    raise SystemExit(run(sys.argv[1:]))


def run(args: Sequence[str]) -> int:
    try:
        result = app(args=list(args), prog_name="subsync", standalone_mode=False)
    except typer.Abort:
        print_error_lines(["aborted"])
        return 1
    except Exception as exc:  # usage errors (click exceptions) and anything that escaped the group
        format_message = getattr(exc, "format_message", None)
        exit_code = getattr(exc, "exit_code", None)
        if callable(format_message) and isinstance(exit_code, int):
            message = str(format_message()).strip()
            if message:  # empty when the help was shown instead (no arguments given)
                command = getattr(getattr(exc, "ctx", None), "command_path", "subsync")
                hint = f" (see '{command} --help')" if exit_code == 2 else ""
                print_error_lines([f"{message}{hint}"])
            return exit_code
        code, lines = error_report(exc)
        print_error_lines(lines)
        return code
    return result if isinstance(result, int) else 0
