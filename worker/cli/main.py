"""The root `subsync` group: the runtime of one invocation (`-v`, settings read on first use), `--version`,
shell completion, and the groups.

Start-up speed (issue 14, docs/contract.md §5): importing this module imports typer and the command
modules only; a command imports SQLAlchemy, Dramatiq, pydantic and rich when it runs (each such import
is marked `# lazy:`), so `subsync --help` neither reads a setting nor connects anywhere.
"""

import copy
import os
import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from worker.cli import (
    billing,
    charges,
    credits,
    customers,
    db,
    demo,
    embedded,
    explain,
    preview,
    queue,
    reconcile,
    subscriptions,
)
from worker.cli.errors import COMMAND_WORDS_KEY, SubsyncGroup, error_report, print_error_lines
from worker.cli.runtime import Runtime, pause_gc, resume_gc

app = typer.Typer(
    name="subsync",
    cls=SubsyncGroup,  # its help is the root callback's docstring
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich's help renderer alone costs ~0.2 s of start-up
)
app.add_typer(db.app, name="db")
app.add_typer(customers.app, name="customers")
app.add_typer(subscriptions.app, name="subscriptions")
app.add_typer(embedded.app, name="embedded")
app.add_typer(charges.app, name="charges")
app.add_typer(credits.app, name="credits")
app.add_typer(explain.app, name="explain")
billing.register(app)
demo.register(app)
preview.register(app)
queue.register(app)
reconcile.register(app)


def _version(value: bool) -> None:
    if value:
        from worker import __version__

        sys.stdout.write(f"subsync {__version__}\n")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    verbose: Annotated[
        bool,  # a flag, not a count: typer coerces every non-bool option through pydantic (~0.1 s of start-up)
        typer.Option(
            "--verbose",
            "-v",
            help="Log info lines (which database and broker are used); SUBSYNC_LOG_LEVEL=DEBUG: more.",
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Keep billing invoice lines in step with subscriptions.

    Data goes to stdout (a table on a terminal, JSON otherwise), logs to stderr: warnings and errors
    only unless -v or SUBSYNC_LOG_LEVEL asks for more. Exit codes: 0 done, 1 failed, 2 bad input.
    """
    runtime = Runtime(verbosity=int(verbose), command=_command_path(ctx))
    ctx.obj = runtime
    ctx.call_on_close(runtime.close)


def _command_path(ctx: typer.Context) -> str:
    """`subscriptions get` for `subsync subscriptions get --namespace …` (for the log line)."""
    words = list(ctx.meta.get(COMMAND_WORDS_KEY, [])) or [ctx.invoked_subcommand or ""]
    return " ".join(words[:2] if words[0] in _GROUPS else words[:1])


_GROUPS = {"db", "customers", "subscriptions", "invoices", "dead-letters", "embedded", "charges", "credits", "explain"}


_ROOT_FLAGS = {"-v", "--verbose"}  # the root options that may come before the command's name


def command_app(args: Sequence[str]) -> typer.Typer:
    """The app that runs `args`: the root with only the command (or group) they name, when they name one.

    Start-up speed (docs/performance.md "Read commands, third pass"): calling a typer app builds the click
    command of every registered command and group first (~5 % of a read command's CPU for the ~40 of them),
    and a command needs only its own. The root group, its callback and its options stay as they are, so the
    command runs, fails and prints its help as in the whole app. Anything else — root help, `--version`, no
    command, an unknown one (its suggestion needs every name), shell completion (its words come from the
    environment, not `args`) — gets the whole app."""
    words = list(args)
    while words and words[0] in _ROOT_FLAGS:
        words.pop(0)
    if not words or "_SUBSYNC_COMPLETE" in os.environ:
        return app
    commands = [c for c in app.registered_commands if c.name == words[0]]
    groups = [g for g in app.registered_groups if g.name == words[0]]
    if not commands and not groups:
        return app
    pruned = copy.copy(app)  # the same settings and root callback; new lists, so `app` keeps every command
    pruned.registered_commands, pruned.registered_groups = commands, groups
    return pruned


def main() -> None:
    """Console-script entry point: usage errors become one `error:` line (exit 2)."""
    pause_gc()  # start-up speed, in a process of its own only (not in `run`): see worker.cli.runtime.pause_gc
    try:
        code = run(sys.argv[1:])
    finally:
        resume_gc()
    raise SystemExit(code)


def run(args: Sequence[str]) -> int:
    try:
        result = command_app(args)(args=list(args), prog_name="subsync", standalone_mode=False)
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
