"""The charge read's plan does not depend on the namespace's other invoices (docs/performance.md "Charge read
plans"): each charge's run, line and their invoices are index probes, never a scan of the namespace's invoices
per charge — which the plain outer joins got on a new database or with no live run anywhere."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, insert, text

from tests.builders import seed_customer
from tests.store.test_charges_store import customer, sync, view  # noqa: F401 (the fixture)
from worker.store.charges import SUBSCRIPTION_CHARGES_SELECT, load_subscription_charges
from worker.store.tables import invoices

NS = "acme"
OTHER_INVOICES = 200


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *[n for child in plan.get("Plans", []) for n in _nodes(child)]]


def test_charge_read_probes_invoices_by_id_whatever_the_namespace_holds(customer: Engine) -> None:  # noqa: F811
    with customer.begin() as conn:
        sync(conn, view(12), "2024-03-15", "credit_only")  # unbooked charges: no live run anywhere
        for n in range(OTHER_INVOICES):
            seed_customer(conn, NS, f"cust_other_{n}")
        conn.execute(
            insert(invoices),
            [
                {
                    "namespace": NS,
                    "id": f"inv_other_{n}",
                    "customer_id": f"cust_other_{n}",
                    "currency": "USD",
                    "type": "gathering",
                    "status": "gathering",
                }
                for n in range(OTHER_INVOICES)
            ],
        )
        charges = load_subscription_charges(conn, NS, "sub_01")
        assert len(charges) >= 12
        sql = str(SUBSCRIPTION_CHARGES_SELECT.compile(conn, compile_kwargs={"render_postcompile": True}))
        explained = conn.exec_driver_sql(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + sql, {"namespace": NS, "subscription_id": "sub_01"}
        ).scalar_one()
    plan = (explained if isinstance(explained, list) else json.loads(explained))[0]["Plan"]
    nodes = _nodes(plan)
    filtered = sum(n.get("Rows Removed by Join Filter", 0) + n.get("Rows Removed by Filter", 0) for n in nodes)
    invoice_rows = sum(n["Actual Rows"] * n["Actual Loops"] for n in nodes if n.get("Relation Name") == "invoices")
    # The old joins filtered out every other invoice once per charge: 12 x 200 rows and more.
    assert filtered < OTHER_INVOICES, filtered
    assert invoice_rows <= 2 * len(charges), invoice_rows
