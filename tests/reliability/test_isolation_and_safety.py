"""Tenant isolation and data safety: namespaces never mix, SQL is never built from input, secrets are
never printed, the image does not run as root."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from sqlalchemy import Engine, event, select
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from tests.builders import flat, item, phase, seed_subscription, set_subscription_end, t, unit
from worker.app.invoicing import invoice_pending_lines
from worker.app.sync import sync_subscription
from worker.cli import app
from worker.store.invoices import list_invoices, set_invoice_status
from worker.store.lines import list_lines
from worker.store.tables import ALL_TABLES

ROOT = Path(__file__).resolve().parents[2]
TABLE_NAMES = {t.name for t in ALL_TABLES}


def snapshot(db: Engine, namespace: str) -> list[tuple]:
    out = []
    with db.connect() as conn:
        for table in ALL_TABLES:
            out += sorted(map(tuple, conn.execute(select(table).where(table.c.namespace == namespace)).all()), key=repr)
    return out


def seed_both(db: Engine) -> None:
    for ns in ("tenant-a", "tenant-b"):
        seed_subscription(
            db,
            phase(
                "default",
                "2024-01-01",
                item("fee", flat("10"), "2024-01-01", id="same"),
                item("api", unit("1"), "2024-01-01", id="same2"),
            ),
            namespace=ns,
        )


def full_flow(db: Engine, namespace: str) -> None:
    sync_subscription(db, namespace, "sub_01", as_of=t("2024-02-10"))
    (created,) = invoice_pending_lines(db, namespace, "cust_01", as_of=t("2024-02-10"), progressive=True)
    with db.begin() as conn:
        set_invoice_status(conn, namespace, created.id, "issued", t("2024-02-11"))
    set_subscription_end(db, "2024-01-20", namespace=namespace)
    sync_subscription(db, namespace, "sub_01", as_of=t("2024-01-20"))
    with db.connect() as conn:
        list_lines(conn, namespace, customer_id="cust_01", include_deleted=True)
        list_invoices(conn, namespace, "cust_01")


def test_a_flow_in_one_namespace_leaves_another_with_equal_ids_untouched(db: Engine) -> None:
    seed_both(db)
    sync_subscription(db, "tenant-b", "sub_01", as_of=t("2024-02-10"))
    before = snapshot(db, "tenant-b")
    full_flow(db, "tenant-a")
    assert snapshot(db, "tenant-b") == before
    assert len(snapshot(db, "tenant-a")) > len(before)  # the flow did write in its own namespace


def test_every_statement_touching_a_project_table_filters_or_writes_namespace(db: Engine) -> None:
    seed_both(db)
    statements: list[str] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(db, "before_cursor_execute", capture)
    try:
        full_flow(db, "tenant-a")
    finally:
        event.remove(db, "before_cursor_execute", capture)
    checked = 0
    for sql in statements:
        tables = {name for name in TABLE_NAMES if re.search(rf"\b{name}\b", sql)}
        if not tables:
            continue  # the advisory lock, set_config
        checked += 1
        lowered = sql.lower()
        inserted, _, source = lowered.partition("select")
        reads_a_table = any(re.search(rf"\b{name}\b", source) for name in TABLE_NAMES)
        if lowered.lstrip().startswith("insert") and not reads_a_table:
            # VALUES, or rows from bound parameters (INSERT … SELECT FROM jsonb_to_recordset(:rows)):
            # nothing is read, the namespace is written.
            assert "namespace" in inserted, sql
        else:
            assert re.search(r"namespace\s*=", lowered) or re.search(r"namespace\s+in\b", lowered), sql
    assert checked >= 15


SQL_CALLS = {"text", "exec_driver_sql", "execute"}


def _is_psycopg_composition(node: ast.expr) -> bool:
    """`sql.SQL("...").format(sql.Identifier(name))` quotes identifiers safely: allowed."""
    return isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "SQL"


def test_no_sql_is_built_by_string_formatting() -> None:
    """Every `text(...)`, `exec_driver_sql(...)` and `execute(...)` argument is a literal or a name,
    never an f-string, `%` or `.format()` result — values go through bound parameters."""
    offenders = []
    for path in (ROOT / "worker").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name not in SQL_CALLS:
                continue
            arg = node.args[0]
            formatted = (
                isinstance(arg, ast.JoinedStr)
                or (isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.Mod | ast.Add))
                or (
                    isinstance(arg, ast.Call)
                    and isinstance(arg.func, ast.Attribute)
                    and arg.func.attr == "format"
                    and not _is_psycopg_composition(arg.func.value)
                )
            )
            if formatted:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_database_password_is_never_printed(db: Engine, cli_env: dict[str, str]) -> None:
    url = make_url(cli_env["DATABASE_URL"]).set(password="s3cr3t-pw")
    env = {**cli_env, "DATABASE_URL": url.render_as_string(hide_password=False)}
    redis = cli_env["REDIS_URL"]
    if redis.startswith("redis://"):
        env["REDIS_URL"] = redis.replace("redis://", "redis://:r3d1s-pw@", 1)
    result = CliRunner().invoke(
        app, ["lines", "--namespace", "acme", "--customer", "nobody", "--format", "json"], env=env
    )
    assert result.exit_code == 0, result.stderr
    assert "s3cr3t-pw" not in result.stderr + result.stdout
    assert "r3d1s-pw" not in result.stderr + result.stdout


def test_docker_image_runs_as_a_non_root_user() -> None:
    users = re.findall(r"^USER\s+(\S+)", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0", "0:0")
