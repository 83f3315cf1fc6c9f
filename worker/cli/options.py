"""Option types shared by the commands: RFC 3339 times, namespaces and ids (CONTRACT §3 syntax)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from worker.contract.fields import is_valid_id
from worker.contract.text import parse_time


def parse_timestamp(value: str) -> datetime:
    """Typer parser for RFC 3339 options (`--at`, `--as-of`, `--deleted-at`); returns UTC."""
    try:
        return parse_time(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} {exc}") from None


def timestamp_option(*param_decls: str, help: str | None = None) -> Any:
    """An RFC 3339 option: `at: Annotated[datetime | None, timestamp_option("--at")] = None`."""
    return typer.Option(*param_decls, parser=parse_timestamp, metavar="TS", help=help)


def identifier_callback(value: str | None) -> str | None:
    """Typer callback checking namespace / id syntax (CONTRACT §3 limits)."""
    if value is not None and not is_valid_id(value):
        raise typer.BadParameter(
            f"{value!r} must be 1-128 characters of A-Z a-z 0-9 . _ : - starting with a letter or digit"
        )
    return value


NamespaceOption = Annotated[
    str, typer.Option("--namespace", metavar="NS", help="Tenant namespace.", callback=identifier_callback)
]
IdOption = Annotated[str, typer.Option("--id", metavar="ID", callback=identifier_callback)]
