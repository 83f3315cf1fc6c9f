"""The actors are one table (`worker.queue.actors.ACTORS`); `worker.bootstrap` binds their settings."""

from __future__ import annotations

from dramatiq.brokers.stub import StubBroker
from sqlalchemy import Engine

from tests.builders import fast_settings
from worker.bootstrap import actor_settings, worker
from worker.contract.events import QUEUE_NAME
from worker.queue.actors import ACTORS


def test_every_row_of_the_table_is_declared_with_the_time_limit_the_settings_give(db: Engine) -> None:
    settings = fast_settings("stub", time_limit_seconds=7, reconcile_time_limit_seconds=90)
    broker = StubBroker()
    try:
        wired = worker(settings, broker, engine=lambda: db)
        limits = {name: broker.get_actor(name).options["time_limit"] for name in broker.get_declared_actors()}
        assert set(limits) == {row.name for row in ACTORS}
        assert limits.pop("reconcile_due") == 90_000
        assert set(limits.values()) == {7_000}
        assert {a.queue_name for a in (wired.actors.subscription_event, wired.actors.advance_charges)} == {QUEUE_NAME}
    finally:
        broker.close()


def test_the_bound_settings_come_from_the_settings() -> None:
    settings = fast_settings(
        "stub", max_target_lines=12, reconcile_page_size=34, invoice_after_sync=False, time_limit_seconds=1.5
    )
    bound = actor_settings(settings)
    assert (bound.max_target_lines, bound.page_size, bound.invoice_after_sync) == (12, 34, False)
    assert bound.time_limit_ms == 1_500
