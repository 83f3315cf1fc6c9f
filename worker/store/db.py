"""Database URL resolution and engine creation (SQLAlchemy 2.0 Core, psycopg 3)."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine, make_url

from worker.contract.text import format_decimal, format_time

_PSYCOPG_DRIVER = "postgresql+psycopg"


def normalize_database_url(url: str) -> str:
    """Use the psycopg 3 driver for plain `postgres://` / `postgresql://` URLs; leave others alone."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername=_PSYCOPG_DRIVER)
    return parsed.render_as_string(hide_password=False)


def replace_database(url: str, database: str) -> str:
    """The same server URL pointing at another database (used for admin connections and tests)."""
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format_decimal(value)
    if isinstance(value, datetime):
        return format_time(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_dumps(value: Any) -> str:
    """JSON for jsonb columns: decimals as shortest strings, times as RFC 3339 UTC."""
    return json.dumps(value, default=_json_default, separators=(",", ":"), ensure_ascii=False)


def make_engine(
    url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    application_name: str = "subsync",
    **kwargs: Any,
) -> Engine:
    """A pooled engine. Every connection uses `TimeZone=UTC`, so timestamps come back in UTC."""
    return create_engine(
        normalize_database_url(url),
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=1800,
        pool_timeout=30,
        json_serializer=json_dumps,
        connect_args={"options": "-c timezone=UTC", "application_name": application_name},
        **kwargs,
    )
